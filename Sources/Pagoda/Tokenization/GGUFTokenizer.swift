import Foundation

extension Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata, following llama.cpp.
    public static func fromGGUF(_ gguf: GGUFFile) throws -> Tokenizer {
        let md = gguf.metadata
        func fail(_ msg: String) -> LoadError { LoadError(file: gguf.path, message: msg) }
        guard let tokenValues = md["tokenizer.ggml.tokens"]?.array else {
            throw fail("missing tokenizer.ggml.tokens (the file has no vocabulary)")
        }
        let tokens = tokenValues.compactMap(\.string)
        guard tokens.count == tokenValues.count, !tokens.isEmpty else {
            throw fail("tokenizer.ggml.tokens must be a non-empty array of strings")
        }
        guard let modelName = md["tokenizer.ggml.model"]?.string else {
            throw fail("missing tokenizer.ggml.model")
        }
        let n = tokens.count
        var kinds = [TokenKind](repeating: .normal, count: n)
        if let tt = md["tokenizer.ggml.token_type"]?.array {
            guard tt.count == n else { throw fail("tokenizer.ggml.token_type has \(tt.count) entries for \(n) tokens") }
            for (i, t) in tt.enumerated() {
                switch t.int ?? 1 {
                case 2: kinds[i] = .unknown
                case 3: kinds[i] = .control
                case 4: kinds[i] = .userDefined
                case 5: kinds[i] = .unused
                case 6: kinds[i] = .byte
                default: kinds[i] = .normal
                }
            }
        }
        func id(_ key: String) -> Int? {
            guard let v = md["tokenizer.ggml.\(key)"]?.int, v >= 0, v < n else { return nil }
            return v
        }
        let pre = md["tokenizer.ggml.pre"]?.string ?? "default"
        var c = TokenizerConfig(model: .spm, tokens: tokens, kinds: kinds)
        var addBOS = false
        var addEOS = false
        switch modelName {
        case "llama":
            c.model = .spm
            if let s = md["tokenizer.ggml.scores"]?.array {
                guard s.count == n else { throw fail("tokenizer.ggml.scores has \(s.count) entries for \(n) tokens") }
                c.scores = s.map { $0.float ?? 0 }
            } else {
                c.scores = [Float](repeating: 0, count: n)
            }
            c.addSpacePrefix = true
            c.stripLeadingSpace = true
            addBOS = true
            c.bos = id("bos_token_id") ?? (n > 1 ? 1 : nil)
            c.eos = id("eos_token_id") ?? (n > 2 ? 2 : nil)
            c.unk = id("unknown_token_id") ?? 0
        case "gpt2":
            c.model = .byteLevelBPE
            guard let mergeValues = md["tokenizer.ggml.merges"]?.array else {
                throw fail("missing tokenizer.ggml.merges (needed by a gpt2 BPE vocabulary)")
            }
            var vocab: [String: Int] = [:]
            vocab.reserveCapacity(n)
            for (i, t) in tokens.enumerated() { vocab[t] = i }
            for (rank, m) in mergeValues.enumerated() {
                guard let s = m.string else { throw fail("tokenizer.ggml.merges[\(rank)] is not a string") }
                guard let (l, r) = splitMerge(s) else { continue }
                guard let li = vocab[l], let ri = vocab[r], let mi = vocab[l + r] else { continue }
                c.merges.add(left: Int32(li), right: Int32(ri), merged: Int32(mi), rank: rank)
            }
            switch pre {
            case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral":
                c.preTokenizer.steps = [.llama3(maxDigits: 3)]
                c.ignoreMerges = true
                addBOS = true
            case "qwen2", "deepseek-r1-qwen", "megrez", "hunyuan":
                c.preTokenizer.steps = [.llama3(maxDigits: 1)]
            case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
                c.preTokenizer.steps = [.digits(individual: true), .gpt2]
            default:
                // "gpt-2", "default", "mpt", "olmo", "jais", ... and names we do not know: GPT-2's rule.
                c.preTokenizer.steps = [.gpt2]
            }
            c.bos = id("bos_token_id")
            c.eos = id("eos_token_id")
            c.unk = id("unknown_token_id")
        case "bert":
            var maxLen = 0
            for t in tokens { maxLen = max(maxLen, t.utf8.count) }
            c.model = .wordPiece(WordPieceModel(phantomSpace: true, maxTokenBytes: maxLen), llamaPreprocess: true)
            c.stripLeadingSpace = true
            addBOS = true
            c.bos = id("cls_token_id") ?? id("bos_token_id") ?? 101
            c.eos = id("eos_token_id")
            c.unk = id("unknown_token_id") ?? 100
        default:
            throw fail("unsupported tokenizer.ggml.model \"\(modelName)\" (supported: llama, gpt2, bert)")
        }
        if let v = md["tokenizer.ggml.add_bos_token"]?.bool { addBOS = v }
        if let v = md["tokenizer.ggml.add_eos_token"]?.bool { addEOS = v }
        if let v = md["tokenizer.ggml.add_space_prefix"]?.bool, case .spm = c.model { c.addSpacePrefix = v; c.stripLeadingSpace = v }
        c.addBOS = addBOS && c.bos != nil
        if case .wordPiece = c.model {
            if addBOS, let b = c.bos { c.prefixIds = [b] }
            if let sep = id("seperator_token_id") ?? id("separator_token_id") ?? (n > 102 ? 102 : nil), addBOS {
                c.suffixIds = [sep]
            }
        } else {
            if addBOS, let b = c.bos { c.prefixIds = [b] }
            if addEOS, let e = c.eos { c.suffixIds = [e] }
        }
        c.extraEOS = [id("eot_token_id"), id("eom_token_id")].compactMap { $0 }

        // Tokens matched in the raw text: control and unknown ones only with parseSpecial, user-defined always.
        let name = (md["general.name"]?.string ?? "").lowercased()
        let isPhi3 = name.contains("phi-3") || name.contains("phi3")
        for (i, t) in tokens.enumerated() where !t.isEmpty {
            let k = kinds[i]
            guard k == .control || k == .userDefined || k == .unknown else { continue }
            var rstrip = false
            if isPhi3 { rstrip = !["<unk>", "<s>", "<|endoftext|>"].contains(t) }
            c.specials.append(SpecialTokenMatcher(bytes: Array(t.utf8), id: i, lstrip: false, rstrip: rstrip,
                                                  onlyWhenParsingSpecial: k != .userDefined))
        }
        return Tokenizer(c)
    }

    /// "left right" (split at the first space after the first character), as llama.cpp does.
    static func splitMerge(_ s: String) -> (String, String)? {
        let u = Array(s.utf8)
        guard u.count >= 2, let sp = u[1...].firstIndex(of: 0x20) else { return nil }
        return (String(decoding: u[..<sp], as: UTF8.self), String(decoding: u[(sp + 1)...], as: UTF8.self))
    }
}
