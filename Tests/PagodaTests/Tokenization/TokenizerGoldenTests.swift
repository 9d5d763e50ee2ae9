import Foundation
import XCTest
@testable import Pagoda

/// SmolLM2 (byte-level BPE, pre-tokenizer "smollm") against Transformers and llama.cpp references.
final class TokenizerGoldenTests: XCTestCase {
    var smol: Tokenizer { get throws { try SharedTokenizers.shared.gguf(TokTestPaths.smolLM) } }

    func testSmolLMMetadata() throws {
        let t = try smol
        XCTAssertEqual(t.vocabSize, 49152)
        XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.eosTokenId, 2)
        XCTAssertTrue(t.eosTokenIds.contains(2))
        XCTAssertFalse(t.addBOS)
        XCTAssertEqual(t.tokenString(1), "<|im_start|>")
        XCTAssertEqual(t.tokenId("<|im_end|>"), 2)
        XCTAssertTrue(t.isSpecial(2))
        XCTAssertFalse(t.isSpecial(253))
        XCTAssertEqual(t.tokenBytes(253), Array(" a".utf8))
        XCTAssertEqual(t.encode("Hi", addSpecialTokens: true), t.encode("Hi"))
        XCTAssertEqual(t.encode("<|im_start|>user", parseSpecial: true).first, 1)
        XCTAssertNotEqual(t.encode("<|im_start|>user", parseSpecial: false).first, 1)
        XCTAssertEqual(t.decode([1, 4093, 2], skipSpecialTokens: true), "user")
        XCTAssertEqual(t.decode([1, 4093, 2]), "<|im_start|>user<|im_end|>")
    }

    func testHFTokenize() throws {
        let t = try smol
        let rows = try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent("hf/tokenize.jsonl"))
        var failures: [String] = []
        for r in rows {
            let text = r["text"] as! String
            let ids = ints(r["ids"])
            let got = t.encode(text)
            if got != ids { failures.append("\(String(reflecting: text)): expected \(ids) got \(got)") }
            let pieces = (r["pieces"] as! [String])
            if ids.map(t.tokenString) != pieces { failures.append("\(String(reflecting: text)): pieces differ") }
            if t.decode(ids) != (r["decoded"] as! String) { failures.append("\(String(reflecting: text)): decode differs") }
            if t.decode(ids) != text { failures.append("\(String(reflecting: text)): decode != text") }
        }
        print("hf/tokenize.jsonl: \(rows.count) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    func testLlamaCppTokenize() throws {
        let t = try smol
        var failures: [String] = []
        var n = 0
        for file in ["llamacpp/tokenize.jsonl", "llamacpp/set2/tokenize.jsonl"] {
            for r in try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent(file)) {
                n += 1
                let text = r["text"] as! String
                let ids = ints(r["ids"])
                let got = t.encode(text, addSpecialTokens: false, parseSpecial: true)
                if got != ids { failures.append("\(file) \(String(reflecting: text)): expected \(ids) got \(got)") }
                if r["ids_parse_special_false"] != nil {
                    let plain = ints(r["ids_parse_special_false"])
                    let got2 = t.encode(text, addSpecialTokens: false, parseSpecial: false)
                    if got2 != plain { failures.append("\(file) \(String(reflecting: text)) parse_special=false: expected \(plain) got \(got2)") }
                }
                let decoded = (r["detokenized"] ?? r["decoded"]) as! String
                if t.decode(ids) != decoded { failures.append("\(file) \(String(reflecting: text)): decode \(String(reflecting: t.decode(ids)))") }
                if let pieces = r["pieces"] as? [Any] {
                    for (id, p) in zip(ids, pieces) {
                        let want: [UInt8] = (p as? String).map { Array($0.utf8) } ?? ints(p).map { UInt8($0) }
                        if t.tokenBytes(id) != want { failures.append("\(file) \(String(reflecting: text)): bytes of \(id)") }
                    }
                }
            }
        }
        print("llamacpp tokenize: \(n) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    /// Chat renderings and prompts: ids of the rendered text with special tokens parsed.
    func testRenderedPromptsAndGreedyText() throws {
        let t = try smol
        var failures: [String] = []
        var n = 0
        let g = TokTestPaths.golden
        for (file, textKey, idsKey) in [("hf/chat.jsonl", "rendered", "ids"), ("llamacpp/set2/chat_template.jsonl", "rendered", "ids"),
                                        ("hf/greedy.jsonl", "prompt", "prompt_ids"), ("hf/logits.jsonl", "prompt", "prompt_ids"),
                                        ("llamacpp/greedy.jsonl", "prompt", "prompt_ids"), ("llamacpp/set2/greedy.jsonl", "prompt", "prompt_ids")] {
            let url = g.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            for r in try TokTestPaths.jsonLines(url) {
                n += 1
                let text = r[textKey] as! String
                if t.encode(text) != ints(r[idsKey]) { failures.append("\(file): \(String(reflecting: text))") }
                if file == "hf/greedy.jsonl", let out = r["output_text"] as? String, t.decode(ints(r["output_ids"])) != out {
                    failures.append("\(file) output_text: \(String(reflecting: out))")
                }
            }
        }
        print("rendered prompts/chats: \(n) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    /// all-MiniLM-L6-v2 uses the bert-base-uncased vocabulary, as does the bge test vocabulary.
    func testEmbeddingInputIdsWithBertGGUF() throws {
        let vocab = TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-bert-bge.gguf")
        let t = try SharedTokenizers.shared.gguf(vocab)
        var failures: [String] = []
        let rows = try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent("embeddings/embeddings.jsonl"))
        for r in rows {
            let text = r["text"] as! String
            var got = t.encode(text, addSpecialTokens: true)
            if got.count > 256 { got = Array(got.prefix(255)) + [102] }
            if got != ints(r["input_ids"]) { failures.append("\(String(reflecting: text)): expected \(ints(r["input_ids"])) got \(got)") }
        }
        print("embeddings.jsonl with bert-bge vocab: \(rows.count) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }
}
