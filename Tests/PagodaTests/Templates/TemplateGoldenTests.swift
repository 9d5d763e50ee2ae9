import Foundation
import XCTest
@testable import Pagoda

/// Compares rendering against Transformers' output for the real chat templates in shared/golden.
final class TemplateGoldenTests: XCTestCase {
    static var golden: URL {
        // Tests/PagodaTests/Templates/<file> -> package root -> ../shared/golden
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/golden")
    }

    /// 2026-01-01 00:00:00 UTC, the time the references were rendered with.
    static let fixedNow = Date(timeIntervalSince1970: 1_767_225_600)

    func jsonLines(_ url: URL) throws -> [JinjaValue] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").map { try JinjaValue.parseJSON(String($0)) }
    }

    func firstDifference(_ a: String, _ b: String) -> Int {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        var i = 0
        while i < x.count && i < y.count && x[i] == y[i] { i += 1 }
        return i
    }

    func testRenderingsMatchTransformers() throws {
        let dir = Self.golden.appendingPathComponent("templates")
        let recordsURL = dir.appendingPathComponent("renderings.jsonl")
        guard FileManager.default.fileExists(atPath: recordsURL.path) else {
            throw XCTSkip("golden renderings not found at \(recordsURL.path)")
        }
        var templates: [String: Result<ChatTemplate, Error>] = [:]
        var failures: [String] = []
        var passed = 0
        let records = try jsonLines(recordsURL)
        for r in records {
            let name = r["template"]!.stringValue!
            let caseName = r["case"]!.stringValue!
            let agp = r["add_generation_prompt"] == .bool(true)
            let label = "\(name) [\(caseName), add_generation_prompt=\(agp)]"
            if templates[name] == nil {
                templates[name] = Result {
                    try ChatTemplate(source: String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8))
                }
            }
            var tools: [JinjaValue]?
            if case .array(let t)? = r["tools"] { tools = t }
            guard case .array(let messages)? = r["messages"] else { XCTFail("bad record"); continue }
            let result = Result {
                try templates[name]!.get().render(
                    messages: messages, tools: tools, addGenerationPrompt: agp,
                    bosToken: r["bos_token"]!.stringValue!, eosToken: r["eos_token"]!.stringValue!, now: Self.fixedNow)
            }
            if let expected = r["rendered"]?.stringValue {
                switch result {
                case .success(let got) where got == expected:
                    passed += 1
                case .success(let got):
                    let off = firstDifference(got, expected)
                    let ctxE = String(String.UnicodeScalarView(Array(expected.unicodeScalars).dropFirst(max(0, off - 20)).prefix(60)))
                    let ctxG = String(String.UnicodeScalarView(Array(got.unicodeScalars).dropFirst(max(0, off - 20)).prefix(60)))
                    failures.append("\(label): differs at offset \(off)\n    expected: \(ctxE.debugDescription)\n    got:      \(ctxG.debugDescription)")
                case .failure(let e):
                    failures.append("\(label): threw \(e)")
                }
            } else {
                if case .success = result {
                    failures.append("\(label): expected an error (\(r["error"]?.stringValue ?? "")) but rendered")
                } else {
                    passed += 1
                }
            }
        }
        if !failures.isEmpty { print(failures.joined(separator: "\n")) }
        print("chat template renderings: \(passed)/\(records.count) match")
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(records.count) renderings differ")
    }

    func testSmolLM2TemplateMatchesHFChat() throws {
        let configURL = Self.golden.appendingPathComponent("archs/qwen2/tokenizer_config.json")
        let chatURL = Self.golden.appendingPathComponent("hf/chat.jsonl")
        guard FileManager.default.fileExists(atPath: configURL.path),
              FileManager.default.fileExists(atPath: chatURL.path) else {
            throw XCTSkip("golden SmolLM2 files not found")
        }
        let config = try JinjaValue.parseJSON(String(contentsOf: configURL, encoding: .utf8))
        let source = try XCTUnwrap(config["chat_template"]?.stringValue)
        let bos = config["bos_token"]?.stringValue ?? ""
        let eos = config["eos_token"]?.stringValue ?? ""
        let template = try ChatTemplate(source: source)
        let records = try jsonLines(chatURL)
        XCTAssertFalse(records.isEmpty)
        for r in records {
            guard case .array(let messages)? = r["messages"] else { XCTFail("bad record"); continue }
            let got = try template.render(messages: messages, addGenerationPrompt: r["add_generation_prompt"] == .bool(true),
                                          bosToken: bos, eosToken: eos)
            XCTAssertEqual(got, r["rendered"]?.stringValue, "case \(PyFormat.str(r["case"] ?? .none))")
        }
    }
}
