import Foundation

/// What a vocabulary entry is (llama.cpp's token types; Hugging Face added tokens map onto them).
enum TokenKind: UInt8, Sendable {
    case normal, unknown, control, userDefined, unused, byte
}

/// A special or added token that is matched in the raw text before pre-tokenization.
struct SpecialTokenMatcher: Sendable {
    var bytes: [UInt8]
    var id: Int
    var lstrip: Bool
    var rstrip: Bool
    /// Control-like tokens are only matched when `parseSpecial` is true; user-defined ones always.
    var onlyWhenParsingSpecial: Bool
}

/// The tokenization algorithm.
enum TokenizerModel: Sendable {
    /// GPT-2 style byte-level BPE (llama.cpp "gpt2", HF BPE with a ByteLevel pre-tokenizer).
    case byteLevelBPE
    /// Hugging Face BPE over characters, with optional <0xNN> byte fallback (Llama-2 style tokenizer.json).
    case bpe(byteFallback: Bool)
    /// llama.cpp's SentencePiece tokenizer (score-ordered bigram merges, byte fallback).
    case spm
    /// WordPiece (BERT).
    case wordPiece(WordPieceModel, llamaPreprocess: Bool)
}

/// Everything a tokenizer is built from; filled by the GGUF and tokenizer.json loaders.
struct TokenizerConfig {
    var model: TokenizerModel
    var tokens: [String]
    var kinds: [TokenKind]
    var scores: [Float] = []
    var merges = BPEMerges()
    var ignoreMerges = false
    var normalizers: [NormalizerStep] = []
    var preTokenizer = PreTokenizer(steps: [])
    var specials: [SpecialTokenMatcher] = []
    /// SentencePiece: prepend a space to text at the start and after special tokens.
    var addSpacePrefix = false
    /// decode(): drop one leading space of the first piece (SentencePiece / WordPiece).
    var stripLeadingSpace = false
    var bos: Int? = nil
    var eos: Int? = nil
    var unk: Int? = nil
    var extraEOS: [Int] = []
    var prefixIds: [Int] = []
    var suffixIds: [Int] = []
    var addBOS = false
    /// Hugging Face: ids of added tokens flagged special (skipped by decode(skipSpecialTokens:)).
    var specialIds: Set<Int> = []
    /// Metaspace replacement character, undone when decoding SentencePiece-style pieces.
    var spaceReplacement: Unicode.Scalar = "\u{2581}"
}

/// Word → ids cache shared by concurrent encode calls.
final class WordCache: @unchecked Sendable {
    private let lock = NSLock()
    private var map: [[UInt8]: [Int32]] = [:]
    private let limit = 65536

    func get(_ key: [UInt8]) -> [Int32]? {
        lock.lock(); defer { lock.unlock() }
        return map[key]
    }
    func set(_ key: [UInt8], _ value: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        if map.count >= limit { map.removeAll(keepingCapacity: true) }
        map[key] = value
    }
}

public final class Tokenizer: Sendable {
    let model: TokenizerModel
    let tokens: [String]
    let kinds: [TokenKind]
    let scores: [Float]
    let vocab: [String: Int]
    let merges: BPEMerges
    let ignoreMerges: Bool
    let normalizers: [NormalizerStep]
    let preTokenizer: PreTokenizer
    /// Longest first.
    let specials: [SpecialTokenMatcher]
    let specialFirstBytes: Set<UInt8>
    let addSpacePrefix: Bool
    let stripLeadingSpace: Bool
    /// Byte-level BPE: id of each byte's character. SentencePiece / byte fallback: id of <0xNN>. -1 if absent.
    let byteIds: [Int32]
    let pieces: [[UInt8]]
    let skippable: [Bool]
    let prefixIds: [Int]
    let suffixIds: [Int]
    let cache = WordCache()

    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let unkTokenId: Int?
    public let eosTokenIds: Set<Int>
    public let addBOS: Bool
    public var vocabSize: Int { tokens.count }

    init(_ c: TokenizerConfig) {
        model = c.model
        tokens = c.tokens
        kinds = c.kinds
        scores = c.scores
        var v: [String: Int] = [:]
        v.reserveCapacity(c.tokens.count)
        for (i, t) in c.tokens.enumerated() { v[t] = i }  // later duplicates win, as in llama.cpp
        vocab = v
        merges = c.merges
        ignoreMerges = c.ignoreMerges
        normalizers = c.normalizers
        preTokenizer = c.preTokenizer
        specials = c.specials.enumerated().sorted {
            $0.element.bytes.count != $1.element.bytes.count ? $0.element.bytes.count > $1.element.bytes.count : $0.offset < $1.offset
        }.map(\.element)
        specialFirstBytes = Set(c.specials.compactMap(\.bytes.first))
        addSpacePrefix = c.addSpacePrefix
        stripLeadingSpace = c.stripLeadingSpace
        bosTokenId = c.bos
        eosTokenId = c.eos
        unkTokenId = c.unk
        addBOS = c.addBOS
        prefixIds = c.prefixIds
        suffixIds = c.suffixIds

        var bIds = [Int32](repeating: -1, count: 256)
        switch c.model {
        case .byteLevelBPE:
            for b in 0..<256 { bIds[b] = Int32(v[String(ByteLevel.byteToScalar[b])] ?? -1) }
        default:
            for b in 0..<256 { bIds[b] = Int32(v[String(format: "<0x%02X>", b)] ?? -1) }
        }
        byteIds = bIds

        // What each token decodes to.
        var ps: [[UInt8]] = []
        ps.reserveCapacity(c.tokens.count)
        var skip: [Bool] = []
        skip.reserveCapacity(c.tokens.count)
        let rep = String(c.spaceReplacement)
        for (i, t) in c.tokens.enumerated() {
            let kind = c.kinds[i]
            let special = kind == .control || kind == .unknown || c.specialIds.contains(i)
            skip.append(special)
            if kind == .control || kind == .userDefined || kind == .unknown || c.specialIds.contains(i) {
                switch c.model {
                case .wordPiece: ps.append(Array((" " + t).utf8))
                default: ps.append(Array(t.utf8))
                }
                continue
            }
            switch c.model {
            case .byteLevelBPE:
                ps.append(ByteLevel.decode(t) ?? Array(t.utf8))
            case .bpe, .spm:
                if let b = Self.parseByteToken(t), kind == .byte || kind == .normal {
                    ps.append([b])
                } else {
                    ps.append(Array(t.replacingOccurrences(of: rep, with: " ").utf8))
                }
            case .wordPiece(let wp, _):
                // Word starts get a space; Hugging Face's WordPiece decoder cleanup (per token) then drops the
                // space before . , ! ? and contractions.
                var piece: String
                if wp.phantomSpace {
                    piece = t.replacingOccurrences(of: "\u{2581}", with: " ")
                } else if t.hasPrefix(wp.continuingPrefix) {
                    piece = String(t.dropFirst(wp.continuingPrefix.count))
                } else {
                    piece = " " + t
                }
                ps.append(Array(Self.wordPieceCleanup(piece).utf8))
            }
        }
        pieces = ps
        skippable = skip

        var eosSet = Set<Int>()
        if let e = c.eos { eosSet.insert(e) }
        for e in c.extraEOS where e >= 0 && e < c.tokens.count { eosSet.insert(e) }
        let endTexts: Set<String> = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                     "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>"]
        for t in endTexts {
            if let id = v[t], c.kinds[id] == .control || c.specialIds.contains(id) { eosSet.insert(id) }
        }
        eosTokenIds = eosSet
    }

    static func wordPieceCleanup(_ s: String) -> String {
        guard s.hasPrefix(" ") else { return s }
        var r = s
        for (a, b) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                       (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            r = r.replacingOccurrences(of: a, with: b)
        }
        return r
    }

    static func parseByteToken(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    // MARK: - Public API

    public func tokenString(_ id: Int) -> String {
        id >= 0 && id < tokens.count ? tokens[id] : ""
    }

    public func tokenId(_ piece: String) -> Int? { vocab[piece] }

    public func tokenBytes(_ id: Int) -> [UInt8] {
        id >= 0 && id < pieces.count ? pieces[id] : []
    }

    /// Control, unknown and Hugging Face special added tokens (what decode(skipSpecialTokens: true) drops).
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < skippable.count && skippable[id]
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        var atStart = true
        for id in ids { appendPiece(id, skipSpecialTokens: skipSpecialTokens, atStart: &atStart, into: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends what `id` contributes to the decoded text; `atStart` tracks the leading-space rule.
    func appendPiece(_ id: Int, skipSpecialTokens: Bool, atStart: inout Bool, into bytes: inout [UInt8]) {
        guard id >= 0 && id < pieces.count else { return }
        if skipSpecialTokens && skippable[id] { return }
        let p = pieces[id]
        if atStart {
            atStart = false
            if stripLeadingSpace && p.first == 0x20 {
                bytes.append(contentsOf: p.dropFirst())
                return
            }
        }
        bytes.append(contentsOf: p)
    }

    public func encode(_ text: String, addSpecialTokens: Bool = false, parseSpecial: Bool = true) -> [Int] {
        var out: [Int] = []
        if addSpecialTokens { out.append(contentsOf: prefixIds) }
        let bytes = Array(text.utf8)
        var prevSpecial = true
        for frag in partition(bytes, parseSpecial: parseSpecial) {
            switch frag {
            case .token(let id):
                out.append(id)
                prevSpecial = true
            case .text(let r):
                let s = String(decoding: bytes[r], as: UTF8.self)
                encodeFragment(s, afterSpecial: prevSpecial, atInputStart: r.lowerBound == 0, into: &out)
                prevSpecial = false
            }
        }
        if addSpecialTokens { out.append(contentsOf: suffixIds) }
        return out
    }

    // MARK: - Special-token partitioning (llama.cpp's tokenizer_st_partition)

    enum Fragment { case text(Range<Int>), token(Int) }

    func partition(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        if bytes.isEmpty { return [] }
        var frags: [Fragment] = [.text(0..<bytes.count)]
        if specials.isEmpty { return frags }
        // Positions of possible first bytes, to skip tokens that do not occur at all.
        var hasFirst = [Bool](repeating: false, count: 256)
        for b in bytes where specialFirstBytes.contains(b) { hasFirst[Int(b)] = true }
        @inline(__always) func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }
        func find(_ needle: [UInt8], in r: Range<Int>) -> Int? {
            let n = needle.count
            guard n > 0, r.count >= n else { return nil }
            let first = needle[0]
            var i = r.lowerBound
            let last = r.upperBound - n
            while i <= last {
                if bytes[i] == first {
                    var k = 1
                    while k < n && bytes[i + k] == needle[k] { k += 1 }
                    if k == n { return i }
                }
                i += 1
            }
            return nil
        }
        for sp in specials {
            if sp.onlyWhenParsingSpecial && !parseSpecial { continue }
            guard let f = sp.bytes.first, hasFirst[Int(f)] else { continue }
            var next: [Fragment] = []
            var changed = false
            for frag in frags {
                guard case .text(let r) = frag else { next.append(frag); continue }
                var base = r.lowerBound
                while base < r.upperBound, let m = find(sp.bytes, in: base..<r.upperBound) {
                    changed = true
                    var leftEnd = m
                    if sp.lstrip { while leftEnd > base && isSpace(bytes[leftEnd - 1]) { leftEnd -= 1 } }
                    if leftEnd > base { next.append(.text(base..<leftEnd)) }
                    next.append(.token(sp.id))
                    var rs = m + sp.bytes.count
                    if sp.rstrip { while rs < r.upperBound && isSpace(bytes[rs]) { rs += 1 } }
                    base = rs
                }
                if base < r.upperBound { next.append(.text(base..<r.upperBound)) }
            }
            if changed { frags = next }
        }
        return frags
    }

    // MARK: - Text fragments

    func encodeFragment(_ text: String, afterSpecial: Bool, atInputStart: Bool, into out: inout [Int]) {
        switch model {
        case .spm:
            var t = (addSpacePrefix && afterSpecial) ? " " + text : text
            t = t.replacingOccurrences(of: " ", with: "\u{2581}")
            SPMModel().tokenize(t, vocab: vocab, scores: scores, byteIds: byteIds, into: &out)
        case .wordPiece(let wp, let llamaPreprocess):
            if llamaPreprocess {
                for w in llamaBertPreprocess(text) { wp.tokenize(word: w, vocab: vocab, unk: unkTokenId, into: &out) }
            } else {
                let norm = normalize(text)
                for p in preTokenizer.split(Array(norm.unicodeScalars), isFirstFragment: atInputStart) {
                    var s = String.UnicodeScalarView()
                    s.append(contentsOf: p)
                    wp.tokenize(word: String(s), vocab: vocab, unk: unkTokenId, into: &out)
                }
            }
        case .byteLevelBPE, .bpe:
            let norm = normalize(text)
            for p in preTokenizer.split(Array(norm.unicodeScalars), isFirstFragment: atInputStart) {
                encodeWord(p, into: &out)
            }
        }
    }

    func normalize(_ s: String) -> String {
        var r = s
        for n in normalizers { r = n.apply(r) }
        return r
    }

    func encodeWord(_ p: Piece, into out: inout [Int]) {
        var key: [UInt8] = []
        key.reserveCapacity(p.count * 2)
        for sc in p { UTF8.encode(sc) { key.append($0) } }
        if key.isEmpty { return }
        if let hit = cache.get(key) {
            for id in hit { out.append(Int(id)) }
            return
        }
        var result: [Int32]
        switch model {
        case .byteLevelBPE:
            if ignoreMerges, let id = vocab[ByteLevel.encode(key)] {
                result = [Int32(id)]
            } else {
                result = merges.apply(key.map { byteIds[Int($0)] })
            }
        case .bpe(let byteFallback):
            var s = String.UnicodeScalarView()
            s.append(contentsOf: p)
            if ignoreMerges, let id = vocab[String(s)] {
                result = [Int32(id)]
                break
            }
            // Unknown characters become byte tokens (encoded as -(id+2) so they never merge).
            var initial: [Int32] = []
            for sc in p {
                if let id = vocab[String(sc)] {
                    initial.append(Int32(id))
                } else if byteFallback {
                    for b in String(sc).utf8 where byteIds[Int(b)] >= 0 { initial.append(-(byteIds[Int(b)] + 2)) }
                } else if let unk = unkTokenId {
                    if initial.last != -(Int32(unk) + 2) { initial.append(-(Int32(unk) + 2)) }
                }
            }
            result = merges.apply(initial).map { $0 < 0 ? -$0 - 2 : $0 }
        default:
            result = []
        }
        if key.count <= 256 { cache.set(key, result) }
        for id in result { out.append(Int(id)) }
    }
}

/// Streaming detokenizer: turns ids into text deltas that never split a UTF-8 character.
public struct IncrementalDetokenizer: Sendable {
    let tokenizer: Tokenizer
    let skipSpecialTokens: Bool
    var atStart = true
    var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false, promptIds: [Int] = []) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        for id in promptIds {
            tokenizer.appendPiece(id, skipSpecialTokens: skipSpecialTokens, atStart: &atStart, into: &pending)
        }
        // Text of the prompt is not emitted; keep only an incomplete trailing character.
        let keep = incompleteUTF8TailLength(pending)
        pending = Array(pending.suffix(keep))
    }

    public mutating func append(_ id: Int) -> String {
        tokenizer.appendPiece(id, skipSpecialTokens: skipSpecialTokens, atStart: &atStart, into: &pending)
        let hold = incompleteUTF8TailLength(pending)
        let cut = pending.count - hold
        if cut == 0 { return "" }
        let s = String(decoding: pending[0..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return s
    }

    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }
}
