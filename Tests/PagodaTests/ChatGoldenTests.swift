import Foundation
import XCTest
@testable import Pagoda

/// The default model's own chat template, read from its GGUF file, against Transformers' apply_chat_template.
final class ChatGoldenTests: XCTestCase {
    func testModelTemplateRendersAndTokenizesLikeTransformers() throws {
        let loaded = EngineFixtures.smol
        let template = try XCTUnwrap(loaded.chatTemplate, "the GGUF carries tokenizer.chat_template")
        let lines = try String(contentsOf: Golden.url("hf/chat.jsonl"), encoding: .utf8).split(separator: "\n")
        for line in lines {
            let rec = try JinjaValue.parseJSON(String(line))
            guard case .array(let messages)? = rec["messages"], case .bool(let addGen)? = rec["add_generation_prompt"],
                  case .string(let expected)? = rec["rendered"], case .array(let ids)? = rec["ids"] else {
                return XCTFail("unexpected record \(line.prefix(80))")
            }
            let rendered = try template.render(messages: messages, addGenerationPrompt: addGen,
                                               bosToken: loaded.bosToken, eosToken: loaded.eosToken)
            XCTAssertEqual(rendered, expected)
            let ours = loaded.tokenizer.encode(rendered, addSpecialTokens: false, parseSpecial: true)
            XCTAssertEqual(ours, ids.compactMap { if case .int(let i) = $0 { return i } else { return nil } })
        }
    }
}
