import Foundation

extension Tokenizer {
    /// Builds a tokenizer from a Hugging Face `tokenizer.json` (and optionally `tokenizer_config.json`).
    public static func fromHuggingFace(tokenizerJSON: URL, tokenizerConfig: URL?) throws -> Tokenizer {
        let path = tokenizerJSON.path
        func fail(_ msg: String) -> LoadError { LoadError(file: path, message: msg) }
        let data: Data
        do { data = try Data(contentsOf: tokenizerJSON) } catch {
            throw fail("cannot read tokenizer.json: \(error.localizedDescription)")
        }
        let root: [String: Any]
        do {
            guard let r = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw fail("tokenizer.json is not a JSON object")
            }
            root = r
        } catch let e as LoadError { throw e } catch {
            throw fail("tokenizer.json is not valid JSON: \(error.localizedDescription)")
        }
        guard let model = root["model"] as? [String: Any] else { throw fail("tokenizer.json has no \"model\" object") }
        guard let vocabObj = model["vocab"] as? [String: Any] else {
            throw fail("tokenizer.json model has no \"vocab\" object (model type \(model["type"] ?? "unknown"))")
        }

        // Vocabulary plus added tokens.
        var idOf: [String: Int] = [:]
        var maxId = -1
        for (k, v) in vocabObj {
            guard let i = (v as? NSNumber)?.intValue, i >= 0 else { throw fail("vocab entry \"\(k)\" has no valid id") }
            idOf[k] = i
            maxId = max(maxId, i)
        }
        struct Added { var id: Int; var content: String; var special: Bool; var lstrip: Bool; var rstrip: Bool }
        var added: [Added] = []
        for a in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let i = (a["id"] as? NSNumber)?.intValue, let content = a["content"] as? String, i >= 0 else {
                throw fail("an added_tokens entry lacks id or content")
            }
            added.append(Added(id: i, content: content, special: (a["special"] as? Bool) ?? false,
                               lstrip: (a["lstrip"] as? Bool) ?? false, rstrip: (a["rstrip"] as? Bool) ?? false))
            maxId = max(maxId, i)
        }
        guard maxId >= 0 else { throw fail("the vocabulary is empty") }
        var tokens = [String](repeating: "", count: maxId + 1)
        for (k, i) in idOf { tokens[i] = k }
        var kinds = [TokenKind](repeating: .normal, count: maxId + 1)
        var specialIds = Set<Int>()
        for a in added {
            tokens[a.id] = a.content
            kinds[a.id] = a.special ? .control : .userDefined
            if a.special { specialIds.insert(a.id) }
            idOf[a.content] = a.id
        }

        // Pre-tokenizer and normalizer.
        var steps: [PreTokenizerStep] = []
        var byteLevel = false
        try parsePreTokenizer(root["pre_tokenizer"], into: &steps, byteLevel: &byteLevel, fail: fail)
        var normalizers: [NormalizerStep] = []
        try parseNormalizer(root["normalizer"], into: &normalizers, fail: fail)
        var decoderStrip = false
        var decoderByteLevel = false
        var replacement: Unicode.Scalar = "\u{2581}"
        inspectDecoder(root["decoder"], strip: &decoderStrip, byteLevel: &decoderByteLevel, replacement: &replacement)

        let type = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "WordPiece")
        var c = TokenizerConfig(model: .byteLevelBPE, tokens: tokens, kinds: kinds)
        c.specialIds = specialIds
        c.normalizers = normalizers
        c.preTokenizer = PreTokenizer(steps: steps)
        c.spaceReplacement = replacement
        if let u = model["unk_token"] as? String { c.unk = idOf[u] }
        switch type {
        case "BPE":
            let byteFallback = (model["byte_fallback"] as? Bool) ?? false
            c.model = (byteLevel || decoderByteLevel) && !byteFallback ? .byteLevelBPE : .bpe(byteFallback: byteFallback)
            c.ignoreMerges = (model["ignore_merges"] as? Bool) ?? false
            guard let mergeList = model["merges"] as? [Any] else { throw fail("BPE model has no \"merges\" list") }
            for (rank, m) in mergeList.enumerated() {
                var pair: (String, String)?
                if let s = m as? String {
                    pair = splitMerge(s)
                } else if let a = m as? [String], a.count == 2 {
                    pair = (a[0], a[1])
                }
                guard let (l, r) = pair else { throw fail("merges[\(rank)] is neither \"a b\" nor [\"a\", \"b\"]") }
                guard let li = idOf[l], let ri = idOf[r], let mi = idOf[l + r] else { continue }
                c.merges.add(left: Int32(li), right: Int32(ri), merged: Int32(mi), rank: rank)
            }
            c.stripLeadingSpace = decoderStrip
        case "WordPiece":
            let prefix = model["continuing_subword_prefix"] as? String ?? "##"
            let maxChars = (model["max_input_chars_per_word"] as? NSNumber)?.intValue ?? 100
            c.model = .wordPiece(WordPieceModel(phantomSpace: false, continuingPrefix: prefix,
                                                maxInputCharsPerWord: maxChars, maxTokenBytes: 0), llamaPreprocess: false)
            c.stripLeadingSpace = true
        default:
            throw fail("unsupported tokenizer model type \"\(type)\" (supported: BPE, WordPiece)")
        }

        // Special tokens matched in the text.
        for a in added where !a.content.isEmpty {
            c.specials.append(SpecialTokenMatcher(bytes: Array(a.content.utf8), id: a.id, lstrip: a.lstrip, rstrip: a.rstrip,
                                                  onlyWhenParsingSpecial: a.special))
        }

        // Post-processor: what encode(addSpecialTokens: true) adds.
        var prefix: [Int] = []
        var suffix: [Int] = []
        parsePostProcessor(root["post_processor"], idOf: idOf, prefix: &prefix, suffix: &suffix)

        // tokenizer_config.json: bos/eos names and add_bos_token/add_eos_token.
        var config: [String: Any] = [:]
        if let cu = tokenizerConfig, FileManager.default.fileExists(atPath: cu.path) {
            do {
                let d = try Data(contentsOf: cu)
                guard let obj = try JSONSerialization.jsonObject(with: d) as? [String: Any] else {
                    throw LoadError(file: cu.path, message: "tokenizer_config.json is not a JSON object")
                }
                config = obj
            } catch let e as LoadError { throw e } catch {
                throw LoadError(file: cu.path, message: "tokenizer_config.json is not valid JSON: \(error.localizedDescription)")
            }
        }
        func tokenName(_ v: Any?) -> String? {
            if let s = v as? String { return s }
            if let d = v as? [String: Any] { return d["content"] as? String }
            return nil
        }
        if let b = tokenName(config["bos_token"]) { c.bos = idOf[b] }
        if let e = tokenName(config["eos_token"]) { c.eos = idOf[e] }
        if let u = tokenName(config["unk_token"]), c.unk == nil { c.unk = idOf[u] }
        if case .wordPiece = c.model {
            if c.bos == nil { c.bos = tokenName(config["cls_token"]).flatMap { idOf[$0] } ?? idOf["[CLS]"] }
            if c.unk == nil { c.unk = idOf["[UNK]"] }
        }
        if let addB = config["add_bos_token"] as? Bool, let b = c.bos {
            if addB && prefix.first != b { prefix.insert(b, at: 0) }
            if !addB { prefix.removeAll { $0 == b } }
        }
        if let addE = config["add_eos_token"] as? Bool, let e = c.eos {
            if addE && suffix.last != e { suffix.append(e) }
            if !addE { suffix.removeAll { $0 == e } }
        }
        c.prefixIds = prefix
        c.suffixIds = suffix
        c.addBOS = c.bos.map { prefix.contains($0) } ?? false
        return Tokenizer(c)
    }

    static func behavior(_ v: Any?) -> SplitBehavior {
        switch v as? String {
        case "Removed": return .removed
        case "MergedWithPrevious": return .mergedWithPrevious
        case "MergedWithNext": return .mergedWithNext
        case "Contiguous": return .contiguous
        default: return .isolated
        }
    }

    static func parsePreTokenizer(_ v: Any?, into steps: inout [PreTokenizerStep], byteLevel: inout Bool,
                                  fail: (String) -> LoadError) throws {
        guard let p = v as? [String: Any] else { return }
        let type = p["type"] as? String ?? ""
        switch type {
        case "Sequence":
            for sub in p["pretokenizers"] as? [Any] ?? [] {
                try parsePreTokenizer(sub, into: &steps, byteLevel: &byteLevel, fail: fail)
            }
        case "ByteLevel":
            byteLevel = true
            if (p["add_prefix_space"] as? Bool) ?? false { steps.append(.prefixSpace) }
            if (p["use_regex"] as? Bool) ?? true { steps.append(.gpt2) }
        case "Split":
            let pat = p["pattern"] as? [String: Any] ?? [:]
            let beh = behavior(p["behavior"])
            let invert = (p["invert"] as? Bool) ?? false
            if let s = pat["String"] as? String {
                steps.append(.literal(Array(s.unicodeScalars), beh, invert: invert))
            } else if let r = pat["Regex"] as? String {
                if beh == .isolated, !invert, let known = knownSplitPattern(r) {
                    steps.append(known)
                } else {
                    do {
                        steps.append(.regex(RegexBox(try NSRegularExpression(pattern: r)), beh, invert: invert))
                    } catch {
                        throw fail("pre_tokenizer Split regex cannot be compiled: \(r)")
                    }
                }
            } else {
                throw fail("pre_tokenizer Split has no String or Regex pattern")
            }
        case "Digits":
            steps.append(.digits(individual: (p["individual_digits"] as? Bool) ?? false))
        case "Metaspace":
            let rep = (p["replacement"] as? String)?.unicodeScalars.first ?? "\u{2581}"
            var scheme = PrependScheme.always
            if let s = p["prepend_scheme"] as? String {
                scheme = s == "first" ? .first : s == "never" ? .never : .always
            } else if let a = p["add_prefix_space"] as? Bool {
                scheme = a ? .always : .never
            }
            steps.append(.metaspace(replacement: rep, prepend: scheme, split: (p["split"] as? Bool) ?? true))
        case "BertPreTokenizer":
            steps.append(.bert)
        case "Whitespace":
            steps.append(.whitespace)
        case "WhitespaceSplit":
            steps.append(.whitespaceSplit)
        case "Punctuation":
            steps.append(.punctuation(behavior(p["behavior"])))
        default:
            throw fail("unsupported pre_tokenizer type \"\(type)\"")
        }
    }

    static func parseNormalizer(_ v: Any?, into steps: inout [NormalizerStep], fail: (String) -> LoadError) throws {
        guard let n = v as? [String: Any] else { return }
        let type = n["type"] as? String ?? ""
        switch type {
        case "Sequence":
            for sub in n["normalizers"] as? [Any] ?? [] { try parseNormalizer(sub, into: &steps, fail: fail) }
        case "Prepend":
            steps.append(.prepend(n["prepend"] as? String ?? ""))
        case "Replace":
            let pat = n["pattern"] as? [String: Any] ?? [:]
            let content = n["content"] as? String ?? ""
            if let s = pat["String"] as? String {
                steps.append(.replace(s, content))
            } else if let r = pat["Regex"] as? String {
                do { steps.append(.replaceRegex(RegexBox(try NSRegularExpression(pattern: r)), content)) } catch {
                    throw fail("normalizer Replace regex cannot be compiled: \(r)")
                }
            }
        case "Lowercase": steps.append(.lowercase)
        case "NFC": steps.append(.nfc)
        case "NFD": steps.append(.nfd)
        case "NFKC": steps.append(.nfkc)
        case "NFKD": steps.append(.nfkd)
        case "StripAccents": steps.append(.stripAccents)
        case "Strip":
            steps.append(.strip(left: (n["strip_left"] as? Bool) ?? true, right: (n["strip_right"] as? Bool) ?? true))
        case "BertNormalizer":
            let lower = (n["lowercase"] as? Bool) ?? true
            steps.append(.bert(cleanText: (n["clean_text"] as? Bool) ?? true,
                               chineseChars: (n["handle_chinese_chars"] as? Bool) ?? true,
                               stripAccents: (n["strip_accents"] as? Bool) ?? lower, lowercase: lower))
        default:
            throw fail("unsupported normalizer type \"\(type)\"")
        }
    }

    static func inspectDecoder(_ v: Any?, strip: inout Bool, byteLevel: inout Bool, replacement: inout Unicode.Scalar) {
        guard let d = v as? [String: Any] else { return }
        switch d["type"] as? String ?? "" {
        case "Sequence":
            for sub in d["decoders"] as? [Any] ?? [] { inspectDecoder(sub, strip: &strip, byteLevel: &byteLevel, replacement: &replacement) }
        case "ByteLevel": byteLevel = true
        case "Strip":
            if ((d["start"] as? NSNumber)?.intValue ?? 0) > 0 { strip = true }
        case "Metaspace":
            if let r = (d["replacement"] as? String)?.unicodeScalars.first { replacement = r }
            if let s = d["prepend_scheme"] as? String { strip = strip || s != "never" } else {
                strip = strip || ((d["add_prefix_space"] as? Bool) ?? true)
            }
        case "Replace":
            if let pat = d["pattern"] as? [String: Any], let s = pat["String"] as? String, d["content"] as? String == " ",
               let r = s.unicodeScalars.first {
                replacement = r
            }
        default: break
        }
    }

    static func parsePostProcessor(_ v: Any?, idOf: [String: Int], prefix: inout [Int], suffix: inout [Int]) {
        guard let p = v as? [String: Any] else { return }
        func pairId(_ x: Any?) -> Int? {
            guard let a = x as? [Any], a.count == 2 else { return nil }
            return (a[1] as? NSNumber)?.intValue ?? (a[0] as? String).flatMap { idOf[$0] }
        }
        switch p["type"] as? String ?? "" {
        case "Sequence":
            for sub in p["processors"] as? [Any] ?? [] { parsePostProcessor(sub, idOf: idOf, prefix: &prefix, suffix: &suffix) }
        case "TemplateProcessing":
            let specialMap = p["special_tokens"] as? [String: Any] ?? [:]
            func ids(_ name: String) -> [Int] {
                if let e = specialMap[name] as? [String: Any], let list = e["ids"] as? [Any] {
                    return list.compactMap { ($0 as? NSNumber)?.intValue }
                }
                return idOf[name].map { [$0] } ?? []
            }
            var seenSequence = false
            for item in p["single"] as? [[String: Any]] ?? [] {
                if item["Sequence"] != nil { seenSequence = true; continue }
                if let st = item["SpecialToken"] as? [String: Any], let name = st["id"] as? String {
                    if seenSequence { suffix += ids(name) } else { prefix += ids(name) }
                }
            }
        case "BertProcessing", "RobertaProcessing":
            if let c = pairId(p["cls"]) { prefix = [c] }
            if let s = pairId(p["sep"]) { suffix = [s] }
        default: break
        }
    }
}
