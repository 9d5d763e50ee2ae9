import Foundation
import XCTest
@testable import Pagoda

/// Rough speed checks: long inputs must not take quadratic time. Prints throughput.
final class TokenizerSpeedTests: XCTestCase {
    #if DEBUG
    static let textBytes = 60_000
    static let wordRepeats = 1000
    #else
    static let textBytes = 400_000
    static let wordRepeats = 5000
    #endif

    func longText() throws -> String {
        var parts: [String] = []
        for r in try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent("hf/greedy.jsonl")) {
            parts.append(r["prompt"] as! String)
        }
        parts += TokenizerStreamingTests.extraStrings
        var s = ""
        while s.utf8.count < Self.textBytes { s += parts.joined(separator: "\n") + " 12345 <|im_end|> " }
        return s
    }

    func timed<T>(_ f: () -> T) -> (T, Double) {
        let t0 = Date()
        let r = f()
        return (r, Date().timeIntervalSince(t0))
    }

    func testLongInputs() throws {
        let text = try longText()
        let mb = Double(text.utf8.count) / 1e6
        for name in ["SmolLM2", "llama-bpe", "llama-spm", "bert-bge"] {
            let url = name == "SmolLM2" ? TokTestPaths.smolLM
                : TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-\(name).gguf")
            let t = try SharedTokenizers.shared.gguf(url)
            let (ids, cold) = timed { t.encode(text) }
            let (ids2, warm) = timed { t.encode(text) }
            XCTAssertEqual(ids, ids2)
            let (s, dec) = timed { t.decode(ids) }
            if name != "bert-bge" { XCTAssertEqual(s, text) }
            print(String(format: "%@: %.2f MB → %d tokens; encode %.3f s cold, %.3f s warm (%.1f MB/s); decode %.3f s",
                         name, mb, ids.count, cold, warm, mb / warm, dec))
            // One long word and one long run of spaces: no quadratic blow-up.
            let word = String(repeating: "abcdefghij", count: Self.wordRepeats)
            let (w, tw) = timed { t.encode(word) }
            let (sp, ts) = timed { t.encode(String(repeating: " ", count: Self.wordRepeats * 10) + "x") }
            XCTAssertFalse(w.isEmpty)
            XCTAssertFalse(sp.isEmpty)
            print(String(format: "%@: long word %.3f s, long space run %.3f s", name, tw, ts))
        }
    }
}
