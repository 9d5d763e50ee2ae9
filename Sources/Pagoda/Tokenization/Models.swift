import Foundation

/// A binary heap ordered by `less` (the top is the element no other element is `less` than... i.e. the minimum).
struct BinaryHeap<T> {
    private(set) var items: [T] = []
    let less: (T, T) -> Bool
    init(less: @escaping (T, T) -> Bool) { self.less = less }
    var isEmpty: Bool { items.isEmpty }
    mutating func push(_ x: T) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if less(items[i], items[parent]) { items.swapAt(i, parent); i = parent } else { break }
        }
    }
    mutating func pop() -> T? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        let n = items.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && less(items[l], items[m]) { m = l }
            if r < n && less(items[r], items[m]) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

/// Rank-ordered BPE merges: pair of token ids → (rank, merged id).
struct BPEMerges: Sendable {
    var table: [UInt64: UInt64] = [:]

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    mutating func add(left: Int32, right: Int32, merged: Int32, rank: Int) {
        let k = Self.key(left, right)
        if table[k] == nil {
            table[k] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        }
    }

    @inline(__always) func lookup(_ a: Int32, _ b: Int32) -> (rank: Int, merged: Int32)? {
        guard let v = table[Self.key(a, b)] else { return nil }
        return (Int(v >> 32), Int32(bitPattern: UInt32(truncatingIfNeeded: v)))
    }

    /// Merges the symbols (token ids) by rank: lowest rank first, leftmost on ties.
    /// Symbols with id < 0 never merge.
    func apply(_ initial: [Int32]) -> [Int32] {
        let n = initial.count
        if n < 2 { return initial }
        var ids = initial
        var prev = [Int](0..<n).map { $0 - 1 }
        var next = [Int](0..<n).map { $0 + 1 == n ? -1 : $0 + 1 }
        var alive = [Bool](repeating: true, count: n)
        struct Cand { var rank: Int; var left: Int; var right: Int; var leftId: Int32; var rightId: Int32; var merged: Int32 }
        var heap = BinaryHeap<Cand>(less: { $0.rank < $1.rank || ($0.rank == $1.rank && $0.left < $1.left) })
        func consider(_ l: Int, _ r: Int) {
            guard l >= 0, r >= 0, ids[l] >= 0, ids[r] >= 0, let m = lookup(ids[l], ids[r]) else { return }
            heap.push(Cand(rank: m.rank, left: l, right: r, leftId: ids[l], rightId: ids[r], merged: m.merged))
        }
        for i in 0..<(n - 1) { consider(i, i + 1) }
        while let c = heap.pop() {
            guard alive[c.left], alive[c.right], next[c.left] == c.right,
                  ids[c.left] == c.leftId, ids[c.right] == c.rightId else { continue }
            ids[c.left] = c.merged
            alive[c.right] = false
            let rn = next[c.right]
            next[c.left] = rn
            if rn >= 0 { prev[rn] = c.left }
            consider(prev[c.left], c.left)
            consider(c.left, rn)
        }
        var out: [Int32] = []
        var i = 0
        while i >= 0 { out.append(ids[i]); i = next[i] }
        return out
    }
}

/// llama.cpp's SentencePiece ("llama" vocab) tokenizer: greedy bigram merging by score over UTF-8
/// characters, highest score first and leftmost on ties; leftovers become <0xNN> byte tokens.
struct SPMModel: Sendable {
    func tokenize(_ text: String, vocab: [String: Int], scores: [Float], byteIds: [Int32], into out: inout [Int]) {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { return }
        // Symbols: byte ranges of UTF-8 characters.
        var start: [Int] = []
        var len: [Int] = []
        var o = 0
        while o < bytes.count {
            let b = bytes[o]
            let l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            let n = min(l, bytes.count - o)
            start.append(o)
            len.append(n)
            o += n
        }
        let count = start.count
        var prev = [Int](0..<count).map { $0 - 1 }
        var next = [Int](0..<count).map { $0 + 1 == count ? -1 : $0 + 1 }
        struct Bigram { var score: Float; var left: Int; var right: Int; var size: Int }
        var heap = BinaryHeap<Bigram>(less: { $0.score > $1.score || ($0.score == $1.score && $0.left < $1.left) })
        func piece(_ s: Int, _ n: Int) -> String {
            String(decoding: bytes[s..<(s + n)], as: UTF8.self)
        }
        func tryAdd(_ l: Int, _ r: Int) {
            guard l >= 0, r >= 0 else { return }
            let size = len[l] + len[r]
            guard let id = vocab[piece(start[l], size)], id < scores.count else { return }
            heap.push(Bigram(score: scores[id], left: l, right: r, size: size))
        }
        for i in 1..<max(count, 1) { tryAdd(i - 1, i) }
        while let b = heap.pop() {
            guard len[b.left] > 0, len[b.right] > 0, len[b.left] + len[b.right] == b.size else { continue }
            len[b.left] += len[b.right]
            len[b.right] = 0
            next[b.left] = next[b.right]
            if next[b.right] >= 0 { prev[next[b.right]] = b.left }
            tryAdd(prev[b.left], b.left)
            tryAdd(b.left, next[b.left])
        }
        var i = 0
        while i != -1 {
            let s = start[i], n = len[i]
            // Only complete characters can match; a truncated tail goes to bytes.
            if let id = vocab[piece(s, n)], isValidUTF8(bytes[s..<(s + n)]) {
                out.append(id)
            } else {
                for b in bytes[s..<(s + n)] {
                    let id = byteIds[Int(b)]
                    if id >= 0 { out.append(Int(id)) }
                }
            }
            i = next[i]
        }
    }
}

/// True when the bytes are valid UTF-8.
func isValidUTF8(_ bytes: ArraySlice<UInt8>) -> Bool {
    var it = bytes.makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&it) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}

/// WordPiece: greedy longest match from the left; continuation pieces use a prefix ("##" in
/// Hugging Face vocabularies) or, in llama.cpp's GGUF form, word starts carry "▁" and continuations nothing.
struct WordPieceModel: Sendable {
    /// true: GGUF phantom-space vocabulary ("▁word", "cont"); false: HF ("word", "##cont").
    var phantomSpace: Bool
    var continuingPrefix: String = "##"
    var maxInputCharsPerWord: Int = 100
    var maxTokenBytes: Int

    func tokenize(word: String, vocab: [String: Int], unk: Int?, into out: inout [Int]) {
        if word.isEmpty { return }
        let before = out.count
        if phantomSpace {
            // llama.cpp: match byte substrings of "▁" + word.
            let w = Array(("\u{2581}" + word).utf8)
            let n = w.count
            var i = 0
            var failed = false
            while i < n {
                var matched = false
                var j = min(n, i + maxTokenBytes + 1)
                while j > i {
                    if j == n || w[j] & 0xC0 != 0x80 {
                        if let id = vocab[String(decoding: w[i..<j], as: UTF8.self)] {
                            out.append(id)
                            matched = true
                            i = j
                            break
                        }
                    }
                    j -= 1
                }
                if !matched { failed = true; break }
            }
            if failed { out.removeSubrange(before...) }
            if out.count == before, let unk { out.append(unk) }
        } else {
            let chars = Array(word.unicodeScalars)
            if chars.count > maxInputCharsPerWord {
                if let unk { out.append(unk) }
                return
            }
            var i = 0
            while i < chars.count {
                var j = chars.count
                var found: Int? = nil
                while j > i {
                    var s = String.UnicodeScalarView()
                    s.append(contentsOf: chars[i..<j])
                    let sub = i > 0 ? continuingPrefix + String(s) : String(s)
                    if let id = vocab[sub] { found = id; break }
                    j -= 1
                }
                guard let id = found else {
                    out.removeSubrange(before...)
                    if let unk { out.append(unk) }
                    return
                }
                out.append(id)
                i = j
            }
        }
    }
}

/// llama.cpp's BERT preprocessing: a per-character NFD (first scalar only, which strips accents of
/// precomposed letters), drop controls, lowercase, split on whitespace, and isolate punctuation,
/// ASCII symbols and CJK ideographs.
func llamaBertPreprocess(_ text: String) -> [String] {
    var words: [String] = [""]
    for cpt0 in text.unicodeScalars {
        var cpt = cpt0
        if cpt.value >= 0xC0 {
            let d = String(cpt).decomposedStringWithCanonicalMapping.unicodeScalars
            if let f = d.first { cpt = f }
        }
        let flags = CharFlags.of(cpt)
        if flags.contains(.whitespace) {
            if !words[words.count - 1].isEmpty { words.append("") }
            continue
        }
        if cpt.value == 0 || cpt.value == 0xFFFD || flags.contains(.control) { continue }
        let lower = cpt.properties.lowercaseMapping
        if flags.contains(.punctuation) || (cpt.value < 0x7F && flags.contains(.symbol)) || cpt.isCJKIdeograph {
            if !words[words.count - 1].isEmpty { words.append("") }
            words[words.count - 1] = lower
            words.append("")
        } else {
            words[words.count - 1] += lower
        }
    }
    if words.last?.isEmpty == true { words.removeLast() }
    return words
}
