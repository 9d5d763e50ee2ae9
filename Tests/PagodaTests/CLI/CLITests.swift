import Foundation
import XCTest
@testable import Pagoda

/// The `pagoda` command line, run as a user would.
final class CLITests: XCTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: CLIRunner.binary.path) else {
            return XCTFail("\(CLIRunner.binary.path) is missing: run scripts/test (it builds the pagoda product first)")
        }
    }

    func testTokenizeMatchesGolden() throws {
        for rec in try Golden.jsonLines("hf/tokenize.jsonl").prefix(12) {
            let text = rec["text"] as! String
            let r = try CLIRunner.run(["tokenize", "--json", "--stdin"], stdin: Data(text.utf8))
            XCTAssertEqual(r.status, 0, r.stderr)
            let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            XCTAssertEqual((obj["ids"] as! [Any]).ints, (rec["ids"] as! [Any]).ints, "text \(text.debugDescription)")
        }
        // A vocab-only GGUF works too.
        let r = try CLIRunner.run(["tokenize", "--model", Golden.url("tokenizers/ggml-vocab-llama-spm.gguf").path, "--", "Hello world"])
        XCTAssertEqual(r.stdout, "15043 3186\n")
    }

    func testTemplateRendersGoldenRecord() throws {
        // Use the record's own line as the input file: key order matters to tojson.
        let lines = try String(contentsOf: Golden.url("templates/renderings.jsonl"), encoding: .utf8).split(separator: "\n")
        let line = try XCTUnwrap(lines.first { $0.contains("\"template\": \"Qwen-Qwen3-0.6B.jinja\"") && $0.contains("\"rendered\"") && !$0.contains("\"tools\": null") })
        let rec = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let conv = dir.appendingPathComponent("conv.json")
        try Data(line.utf8).write(to: conv)
        let r = try CLIRunner.run(["template", "--template", Golden.url("templates/Qwen-Qwen3-0.6B.jinja").path,
                                   "--input", conv.path, "--date", "2026-01-01"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, rec["rendered"] as? String)

        let bad = dir.appendingPathComponent("bad.jinja")
        try Data("{% if messages %}unclosed".utf8).write(to: bad)
        let e = try CLIRunner.run(["template", "--template", bad.path, "--input", conv.path])
        XCTAssertNotEqual(e.status, 0)
        XCTAssertTrue(e.stderr.contains(bad.path) && e.stderr.contains("line"), e.stderr)
    }

    /// `generate --json` reports ids and per-step top logprobs; its greedy continuation passes the closeness rule
    /// against Transformers (the default path multiplies with int8-quantized activations, as llama.cpp does).
    func testGenerateJSONMatchesGreedyReference() throws {
        let rec = try Golden.jsonLines("hf/greedy.jsonl")[0]
        let r = try CLIRunner.run(["generate", "--prompt", rec["prompt"] as! String, "--max-tokens", "12", "--json", "--logprobs", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((obj["prompt_ids"] as! [Any]).ints, (rec["prompt_ids"] as! [Any]).ints)
        let out = (obj["output_ids"] as! [Any]).ints
        let steps = obj["steps"] as! [[String: Any]]
        XCTAssertEqual(steps.count, 12)
        XCTAssertEqual(steps.map { ($0["id"] as! NSNumber).intValue }, out)
        let refSteps = rec["steps"] as! [[String: Any]]
        for (a, b) in zip(steps, refSteps) {
            let ours = (a["id"] as! NSNumber).intValue, theirs = (b["id"] as! NSNumber).intValue
            let ourTop = (a["top"] as! [[Any]]).map { ($0[0] as! NSNumber).intValue }
            let refTop = (b["top"] as! [[Any]]).map { ($0[0] as! NSNumber).intValue }
            XCTAssertEqual(ourTop.count, 5)
            XCTAssertEqual(ourTop[0], ours)
            if ours != theirs {
                XCTAssertTrue(refTop.contains(ours) && ourTop.contains(theirs), "diverged beyond the top 5: \(ours) vs \(theirs)")
                break
            }
            XCTAssertEqual((a["logprob"] as! NSNumber).doubleValue, (b["logprob"] as! NSNumber).doubleValue, accuracy: 0.35)
        }
        XCTAssertEqual(obj["output_text"] as? String, EngineFixtures.smol.tokenizer.decode(out))
    }

    func testGenerateStreamsTextAndChat() throws {
        let r = try CLIRunner.run(["generate", "--prompt", "What is the capital of France?", "--chat", "--max-tokens", "16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        // With fp32 weights and activations the answer is the reference model's.
        let f = try CLIRunner.run(["generate", "--prompt", "What is the capital of France?", "--chat", "--max-tokens", "16"],
                                  environment: ["PAGODA_FP32_WEIGHTS": "1"])
        XCTAssertEqual(f.status, 0, f.stderr)
        XCTAssertTrue(f.stdout.contains("Paris"), f.stdout)
    }

    func testBadInputsGiveClearErrors() throws {
        let r = try CLIRunner.run(["generate", "--model", "/nonexistent/model.gguf", "--prompt", "x"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("/nonexistent/model.gguf") && r.stderr.contains("no such file"), r.stderr)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-cli-\(UUID().uuidString).gguf")
        try Data("GGUF\u{3}\u{0}".utf8).write(to: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = try CLIRunner.run(["tokenize", "--model", dir.path, "x"])
        XCTAssertEqual(t.status, 1)
        XCTAssertTrue(t.stderr.contains(dir.path) && t.stderr.contains("truncated"), t.stderr)
    }
}
