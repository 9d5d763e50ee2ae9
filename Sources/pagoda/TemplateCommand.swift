import ArgumentParser
import Foundation
import Pagoda

struct TemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "template", abstract: "Render a chat template for a conversation.")

    @Option(help: "The Jinja chat template file.") var template: String
    @Option(help: "JSON with messages, and optionally tools, add_generation_prompt, bos_token, eos_token.") var input: String
    @Option(help: "The date strftime_now sees (YYYY-MM-DD, UTC midnight).") var date: String?

    func run() throws {
        guard let src = FileManager.default.contents(atPath: template) else { throw CLIError("pagoda template: cannot read \(template)") }
        guard let conv = FileManager.default.contents(atPath: input) else { throw CLIError("pagoda template: cannot read \(input)") }
        let chat: ChatTemplate
        do {
            chat = try ChatTemplate(source: String(decoding: src, as: UTF8.self))
        } catch {
            throw CLIError("pagoda template: \(template): \(error)")
        }
        let value: JinjaValue
        do {
            value = try JinjaValue.parseJSON(String(decoding: conv, as: UTF8.self))
        } catch {
            throw CLIError("pagoda template: \(input): not valid JSON: \(error)")
        }
        guard case .array(let messages)? = value["messages"] else {
            throw CLIError("pagoda template: \(input): needs a \"messages\" list")
        }
        var tools: [JinjaValue]?
        if case .array(let t)? = value["tools"] { tools = t }
        var addGen = false
        if case .bool(let b)? = value["add_generation_prompt"] { addGen = b }
        do {
            let out = try chat.render(messages: messages, tools: tools, addGenerationPrompt: addGen,
                                      bosToken: value["bos_token"]?.stringValue ?? "", eosToken: value["eos_token"]?.stringValue ?? "",
                                      now: try parseDate(date))
            writeStdout(out)
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("pagoda template: \(template): \(error)")
        }
    }
}
