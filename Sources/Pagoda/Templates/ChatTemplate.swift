import Foundation

/// A Hugging Face chat template, rendered the way Transformers' `apply_chat_template` does.
public struct ChatTemplate: Sendable {
    public let template: JinjaTemplate

    public init(source: String) throws {
        template = try JinjaTemplate(source)
    }

    /// Renders a conversation. Like Transformers, the context always holds `messages`, `tools`
    /// (None when not given), `documents` (None), `add_generation_prompt`, `bos_token` and
    /// `eos_token`; `extra` adds or overrides keys (e.g. `enable_thinking`).
    public func render(messages: [JinjaValue], tools: [JinjaValue]? = nil, addGenerationPrompt: Bool,
                       bosToken: String, eosToken: String, extra: [String: JinjaValue] = [:],
                       now: Date = Date()) throws -> String {
        var context: [String: JinjaValue] = [
            "messages": .array(messages),
            "tools": tools.map { .array($0) } ?? .none,
            "documents": .none,
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
        ]
        for (k, v) in extra { context[k] = v }
        return try template.render(context, now: now)
    }
}
