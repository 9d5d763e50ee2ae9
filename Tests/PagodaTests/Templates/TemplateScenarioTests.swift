import Foundation
import XCTest
@testable import Pagoda

/// Renders every golden chat template with tool-call, tool-result, reasoning and multi-part
/// conversations and compares a hash of the output with Python Jinja2's (configured like
/// Transformers). Regenerate the fixture with scripts/gen-template-scenarios.py.
final class TemplateScenarioTests: XCTestCase {
    static func fnv1a64(_ s: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    func testScenariosMatchJinja2() throws {
        let packageRoot = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let fixture = packageRoot.appendingPathComponent("Fixtures/template-scenarios.json")
        let templates = TemplateGoldenTests.golden.appendingPathComponent("templates")
        guard FileManager.default.fileExists(atPath: templates.path) else {
            throw XCTSkip("golden templates not found at \(templates.path)")
        }
        let data = try JinjaValue.parseJSON(String(contentsOf: fixture, encoding: .utf8))
        guard case .array(let tools)? = data["tools"], case .object(let scenarios)? = data["scenarios"],
              case .array(let records)? = data["records"] else { return XCTFail("bad fixture") }
        var compiled: [String: ChatTemplate] = [:]
        var failures: [String] = []
        for r in records {
            let name = r["template"]!.stringValue!
            let scenario = r["scenario"]!.stringValue!
            let withTools = r["with_tools"] == .bool(true)
            guard case .array(let messages)? = scenarios[scenario] else { return XCTFail("bad scenario") }
            if compiled[name] == nil {
                compiled[name] = try ChatTemplate(source: String(contentsOf: templates.appendingPathComponent(name), encoding: .utf8))
            }
            let label = "\(name) [\(scenario)\(withTools ? "+tools" : "")]"
            do {
                let out = try compiled[name]!.render(messages: messages, tools: withTools ? tools : nil,
                                                     addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>",
                                                     now: TemplateGoldenTests.fixedNow)
                if let err = r["error"]?.stringValue {
                    failures.append("\(label): rendered, but Jinja2 raised \(err)")
                } else if Self.fnv1a64(out) != r["fnv1a64"]?.stringValue || r["length"] != .int(out.utf8.count) {
                    failures.append("\(label): output differs from Jinja2 (length \(out.utf8.count) vs \(PyFormat.str(r["length"] ?? .none)))")
                }
            } catch {
                if r["error"] == nil { failures.append("\(label): threw \(error)") }
            }
        }
        if !failures.isEmpty { print(failures.joined(separator: "\n")) }
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(records.count) scenario renderings differ")
    }
}
