import Foundation
import XCTest
@testable import Pagoda

/// llama.cpp's test-tokenizer-0 cases: `.inp` holds cases each followed by "\n__ggml_vocab_test__\n",
/// `.out` one line of ids per case, tokenized with add_special = false and parse_special = false.
final class TokenizerVocabTests: XCTestCase {
    func runVocab(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let base = TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-\(name).gguf")
        try TokTestPaths.requireFile(base)
        let tok = try Tokenizer.fromGGUF(GGUFFile(path: base.path))
        let raw = try String(contentsOf: URL(fileURLWithPath: base.path + ".inp"), encoding: .utf8)
        var cases: [String] = []
        let sep = "\n__ggml_vocab_test__\n"
        var rest = Substring(raw)
        while !rest.isEmpty {
            if let r = rest.range(of: sep) {
                cases.append(String(rest[..<r.lowerBound]))
                rest = rest[r.upperBound...]
            } else {
                cases.append(String(rest))
                rest = ""
            }
        }
        let outs = try String(contentsOf: URL(fileURLWithPath: base.path + ".out"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertGreaterThanOrEqual(outs.count, cases.count, file: file, line: line)
        var failures: [String] = []
        for (i, text) in cases.enumerated() {
            let expected = outs[i].split(separator: " ").map { Int($0)! }
            let got = tok.encode(text, addSpecialTokens: false, parseSpecial: false)
            if got != expected {
                failures.append("case \(i) \(String(reflecting: text)):\n  expected \(expected)\n  got      \(got)")
            }
        }
        print("vocab \(name): \(cases.count - failures.count)/\(cases.count) cases match")
        XCTAssertEqual(failures.count, 0, "\(name): \(failures.count) of \(cases.count) cases differ:\n" + failures.joined(separator: "\n"),
                       file: file, line: line)
    }

    func testVocabLlamaBPE() throws { try runVocab("llama-bpe") }
    func testVocabLlamaSPM() throws { try runVocab("llama-spm") }
    func testVocabQwen2() throws { try runVocab("qwen2") }
    func testVocabGPT2() throws { try runVocab("gpt-2") }
    func testVocabPhi3() throws { try runVocab("phi-3") }
    func testVocabBertBGE() throws { try runVocab("bert-bge") }
}
