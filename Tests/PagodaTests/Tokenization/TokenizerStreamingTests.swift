import Foundation
import XCTest
@testable import Pagoda

final class TokenizerStreamingTests: XCTestCase {
    static let extraStrings = [
        "🙂 👨‍👩‍👧‍👦 🇫🇷 👍🏽 ❤️", "中文测试，你好世界！", "日本語のテキスト", "한국어 문장입니다",
        "مدل‌های زبانی بزرگ", "سلام دنیا ۱۲۳", "Ünïcödé façade naïve", "Ελληνικά", "русский текст",
        "🦙.cpp", "a\u{200B}b\u{00A0}c", "<|im_start|>user\nHi 😀<|im_end|>\n",
    ]

    func check(_ t: Tokenizer, _ ids: [Int], skip: Bool = false, label: String) -> String? {
        var d = IncrementalDetokenizer(tokenizer: t, skipSpecialTokens: skip)
        var out = ""
        let full = t.decode(ids, skipSpecialTokens: skip)
        for id in ids {
            let delta = d.append(id)
            if delta.contains("\u{FFFD}") && !full.contains("\u{FFFD}") { return "\(label): delta with U+FFFD" }
            out += delta
        }
        out += d.flush()
        return out == full ? nil : "\(label): \(String(reflecting: out)) != \(String(reflecting: full))"
    }

    func texts() throws -> [String] {
        var all = Self.extraStrings
        for f in ["hf/tokenize.jsonl", "llamacpp/set2/tokenize.jsonl"] {
            all += try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent(f)).map { $0["text"] as! String }
        }
        return all
    }

    func testIncrementalMatchesDecodeSmolLM() throws {
        let t = try SharedTokenizers.shared.gguf(TokTestPaths.smolLM)
        var failures: [String] = []
        var splitChars = 0
        for text in try texts() {
            let ids = t.encode(text)
            XCTAssertEqual(t.decode(ids), text)
            // Count tokens that end inside a UTF-8 sequence (the streaming case that matters).
            splitChars += ids.filter { String(bytes: t.tokenBytes($0), encoding: .utf8) == nil }.count
            for skip in [false, true] {
                if let f = check(t, ids, skip: skip, label: String(reflecting: text)) { failures.append(f) }
            }
        }
        XCTAssertGreaterThan(splitChars, 10)
        XCTAssertEqual(failures, [])
    }

    func testIncrementalMatchesDecodeSentencePieceAndWordPiece() throws {
        var failures: [String] = []
        for name in ["llama-spm", "phi-3", "bert-bge", "llama-bpe", "qwen2"] {
            let t = try SharedTokenizers.shared.gguf(TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-\(name).gguf"))
            for text in try texts() + [" leading space", "  two", "Hello"] {
                for addSpecial in [false, true] {
                    let ids = t.encode(text, addSpecialTokens: addSpecial)
                    for skip in [false, true] {
                        if let f = check(t, ids, skip: skip, label: "\(name) \(String(reflecting: text))") { failures.append(f) }
                    }
                }
            }
        }
        XCTAssertEqual(failures, [])
        let spm = try SharedTokenizers.shared.gguf(TokTestPaths.golden.appendingPathComponent("tokenizers/ggml-vocab-llama-spm.gguf"))
        XCTAssertEqual(spm.decode(spm.encode("Hello world")), "Hello world")
        XCTAssertEqual(spm.decode(spm.encode(" Hello world")), " Hello world")
        XCTAssertEqual(spm.decode(spm.encode("Hello", addSpecialTokens: true)), "<s> Hello")
        XCTAssertEqual(spm.decode(spm.encode("Hello", addSpecialTokens: true), skipSpecialTokens: true), "Hello")
        XCTAssertEqual(spm.tokenBytes(spm.tokenId("<0x0A>")!), [0x0A])
        XCTAssertEqual(spm.tokenBytes(15043), Array(" Hello".utf8))
    }

    func testPromptContinuationAndInvalidBytes() throws {
        let t = try SharedTokenizers.shared.gguf(TokTestPaths.smolLM)
        let prompt = t.encode("Translate: 🙂")
        let gen = t.encode(" 中文 done")
        // Split a multi-byte character between prompt and continuation.
        let all = prompt + gen
        for cut in 1..<all.count {
            var d = IncrementalDetokenizer(tokenizer: t, promptIds: Array(all[..<cut]))
            var out = ""
            for id in all[cut...] { out += d.append(id) }
            out += d.flush()
            let before = t.decode(Array(all[..<cut]))
            let full = t.decode(all)
            // Whatever the prompt's text is up to its last complete character, the rest comes out.
            let cleanPrefix = before.hasSuffix("\u{FFFD}") ? String(before.dropLast()) : before
            XCTAssertEqual(cleanPrefix + out, full, "cut \(cut)")
        }
        // A lone continuation byte really is invalid: both give U+FFFD.
        let byte80 = t.tokenId(String(ByteLevel.byteToScalar[0x80]))!
        let ids = [t.tokenId("a")!, byte80, t.tokenId("b")!]
        XCTAssertEqual(t.decode(ids), "a\u{FFFD}b")
        XCTAssertNil(check(t, ids, label: "invalid"))
        // An incomplete sequence at the end is replaced on flush.
        let e4 = t.tokenId(String(ByteLevel.byteToScalar[0xE4]))!
        var d = IncrementalDetokenizer(tokenizer: t)
        XCTAssertEqual(d.append(t.tokenId("a")!), "a")
        XCTAssertEqual(d.append(e4), "")
        XCTAssertEqual(d.flush(), "\u{FFFD}")
    }
}

final class TokenizerErrorTests: XCTestCase {
    func tmp(_ name: String) -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-\(UUID().uuidString)-\(name)")
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }

    func testCorruptTokenizerJSON() throws {
        let u = tmp("tokenizer.json")
        try Data("{ \"model\": { \"type\": \"BPE\", ".utf8).write(to: u)
        XCTAssertThrowsError(try Tokenizer.fromHuggingFace(tokenizerJSON: u, tokenizerConfig: nil)) { e in
            guard let le = e as? LoadError else { return XCTFail("not a LoadError: \(e)") }
            XCTAssertEqual(le.file, u.path)
            XCTAssertTrue(le.message.contains("not valid JSON"), le.message)
        }
        try Data("{\"model\": {\"type\": \"BPE\", \"merges\": []}}".utf8).write(to: u)
        XCTAssertThrowsError(try Tokenizer.fromHuggingFace(tokenizerJSON: u, tokenizerConfig: nil)) { e in
            XCTAssertTrue((e as? LoadError)?.message.contains("vocab") ?? false, "\(e)")
        }
        let missing = tmp("absent.json")
        XCTAssertThrowsError(try Tokenizer.fromHuggingFace(tokenizerJSON: missing, tokenizerConfig: nil)) { e in
            XCTAssertEqual((e as? LoadError)?.file, missing.path)
        }
    }

    func testGGUFWithoutTokens() throws {
        // A minimal GGUF v3: no tensors, one metadata entry tokenizer.ggml.model = "gpt2".
        var b = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b.append(contentsOf: Array(s.utf8)) }
        b.append(contentsOf: Array("GGUF".utf8))
        u32(3); u64(0); u64(1)
        str("tokenizer.ggml.model"); u32(8); str("gpt2")
        let u = tmp("notokens.gguf")
        try b.write(to: u)
        let g = try GGUFFile(path: u.path)
        XCTAssertThrowsError(try Tokenizer.fromGGUF(g)) { e in
            guard let le = e as? LoadError else { return XCTFail("not a LoadError: \(e)") }
            XCTAssertEqual(le.file, u.path)
            XCTAssertTrue(le.message.contains("tokenizer.ggml.tokens"), le.message)
        }
    }
}
