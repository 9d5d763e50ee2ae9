import Foundation

typealias Piece = ArraySlice<Unicode.Scalar>

/// How a split step treats its matches (Hugging Face `SplitDelimiterBehavior`).
enum SplitBehavior: Sendable {
    case isolated, removed, mergedWithPrevious, mergedWithNext, contiguous
}

/// NSRegularExpression is immutable once built; the box makes that explicit for Sendable checking.
final class RegexBox: @unchecked Sendable {
    let regex: NSRegularExpression
    init(_ regex: NSRegularExpression) { self.regex = regex }
}

/// One pre-tokenization step: maps each piece of text to smaller pieces.
enum PreTokenizerStep: Sendable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3(maxDigits: Int)
    /// Digits: every `\p{N}` on its own (individual) or runs of them.
    case digits(individual: Bool)
    /// A regex we do not recognise, run through NSRegularExpression.
    case regex(RegexBox, SplitBehavior, invert: Bool)
    /// A literal string delimiter.
    case literal([Unicode.Scalar], SplitBehavior, invert: Bool)
    /// ByteLevel's add_prefix_space: prepend a space unless the piece starts with one.
    case prefixSpace
    /// Metaspace: replace ' ' with the replacement, maybe prepend one, maybe split before each.
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
    /// Split on whitespace, dropping it.
    case whitespaceSplit
    /// `\w+|[^\w\s]+`
    case whitespace
    /// BERT: split on whitespace (dropped) and punctuation (isolated).
    case bert
    /// Punctuation characters become their own pieces.
    case punctuation(SplitBehavior)
}

enum PrependScheme: Sendable { case always, first, never }

struct PreTokenizer: Sendable {
    var steps: [PreTokenizerStep]

    /// Splits `text` into pieces. `isFirstFragment`: the text begins the input (Metaspace "first").
    func split(_ scalars: [Unicode.Scalar], isFirstFragment: Bool) -> [Piece] {
        var pieces: [Piece] = scalars.isEmpty ? [] : [scalars[...]]
        for step in steps {
            var next: [Piece] = []
            next.reserveCapacity(pieces.count * 2)
            for (k, p) in pieces.enumerated() {
                apply(step, to: p, isFirst: isFirstFragment && k == 0, into: &next)
            }
            pieces = next
        }
        return pieces
    }

    private func apply(_ step: PreTokenizerStep, to p: Piece, isFirst: Bool, into out: inout [Piece]) {
        if p.isEmpty { return }
        switch step {
        case .gpt2:
            for r in scanGPT2(p) { out.append(p[r]) }
        case .llama3(let maxDigits):
            for r in scanLlama3(p, maxDigits: maxDigits) { out.append(p[r]) }
        case .digits(let individual):
            var matches: [Range<Int>] = []
            var i = p.startIndex
            while i < p.endIndex {
                if CharFlags.of(p[i]).contains(.number) {
                    var j = i + 1
                    if !individual {
                        while j < p.endIndex && CharFlags.of(p[j]).contains(.number) { j += 1 }
                    }
                    matches.append(i..<j)
                    i = j
                } else {
                    i += 1
                }
            }
            splitBy(p, matches: matches, behavior: .isolated, invert: false, into: &out)
        case .regex(let box, let behavior, let invert):
            var str = String.UnicodeScalarView()
            str.append(contentsOf: p)
            let s = String(str)
            let ns = s as NSString
            // Map UTF-16 offsets back to scalar indices.
            var utf16ToScalar = [Int](repeating: 0, count: ns.length + 1)
            var u = 0
            for (k, sc) in p.enumerated() {
                let w = sc.value > 0xFFFF ? 2 : 1
                for t in 0..<w { utf16ToScalar[u + t] = p.startIndex + k }
                u += w
            }
            utf16ToScalar[ns.length] = p.endIndex
            let results = box.regex.matches(in: s, options: [], range: NSRange(location: 0, length: ns.length))
            var matches: [Range<Int>] = []
            for m in results where m.range.length > 0 {
                matches.append(utf16ToScalar[m.range.location]..<utf16ToScalar[m.range.location + m.range.length])
            }
            splitBy(p, matches: matches, behavior: behavior, invert: invert, into: &out)
        case .literal(let delim, let behavior, let invert):
            var matches: [Range<Int>] = []
            if !delim.isEmpty {
                var i = p.startIndex
                while i + delim.count <= p.endIndex {
                    if p[i..<(i + delim.count)].elementsEqual(delim) {
                        matches.append(i..<(i + delim.count))
                        i += delim.count
                    } else {
                        i += 1
                    }
                }
            }
            splitBy(p, matches: matches, behavior: behavior, invert: invert, into: &out)
        case .prefixSpace:
            if p.first != " " {
                out.append(([" "] + p)[...])
            } else {
                out.append(p)
            }
        case .metaspace(let rep, let prepend, let split):
            var a: [Unicode.Scalar] = p.map { $0 == " " ? rep : $0 }
            if a.first != rep && (prepend == .always || (prepend == .first && isFirst)) {
                a.insert(rep, at: 0)
            }
            if split {
                var start = 0
                for i in 1..<max(a.count, 1) where a[i] == rep {
                    out.append(a[start..<i])
                    start = i
                }
                if start < a.count { out.append(a[start...]) }
            } else {
                out.append(a[...])
            }
        case .whitespaceSplit:
            var i = p.startIndex
            while i < p.endIndex {
                while i < p.endIndex && CharFlags.of(p[i]).contains(.whitespace) { i += 1 }
                let s = i
                while i < p.endIndex && !CharFlags.of(p[i]).contains(.whitespace) { i += 1 }
                if i > s { out.append(p[s..<i]) }
            }
        case .whitespace:
            // \w+|[^\w\s]+
            func isWord(_ c: Unicode.Scalar) -> Bool {
                let f = CharFlags.of(c)
                return f.contains(.letter) || f.contains(.number) || f.contains(.mark) || c == "_"
                    || c.properties.generalCategory == .connectorPunctuation
            }
            var i = p.startIndex
            while i < p.endIndex {
                let c = p[i]
                if CharFlags.of(c).contains(.whitespace) { i += 1; continue }
                let s = i
                let w = isWord(c)
                while i < p.endIndex && !CharFlags.of(p[i]).contains(.whitespace) && isWord(p[i]) == w { i += 1 }
                out.append(p[s..<i])
            }
        case .bert:
            var i = p.startIndex
            while i < p.endIndex {
                let c = p[i]
                if CharFlags.of(c).contains(.whitespace) { i += 1; continue }
                if isBertPunctuation(c) { out.append(p[i..<(i + 1)]); i += 1; continue }
                let s = i
                while i < p.endIndex && !CharFlags.of(p[i]).contains(.whitespace) && !isBertPunctuation(p[i]) { i += 1 }
                out.append(p[s..<i])
            }
        case .punctuation(let behavior):
            var matches: [Range<Int>] = []
            for i in p.indices where isBertPunctuation(p[i]) { matches.append(i..<(i + 1)) }
            splitBy(p, matches: matches, behavior: behavior, invert: false, into: &out)
        }
    }
}

/// BERT's punctuation test: ASCII non-alphanumeric printable characters or Unicode P*.
func isBertPunctuation(_ c: Unicode.Scalar) -> Bool {
    let v = c.value
    if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
    return CharFlags.of(c).contains(.punctuation)
}

/// Applies a Hugging Face split behaviour given the (sorted, disjoint) match ranges.
func splitBy(_ p: Piece, matches: [Range<Int>], behavior: SplitBehavior, invert: Bool, into out: inout [Piece]) {
    // Build the alternating list of (range, isMatch).
    var parts: [(Range<Int>, Bool)] = []
    var pos = p.startIndex
    for m in matches {
        if m.lowerBound > pos { parts.append((pos..<m.lowerBound, invert)) }
        parts.append((m, !invert))
        pos = m.upperBound
    }
    if pos < p.endIndex { parts.append((pos..<p.endIndex, invert)) }
    switch behavior {
    case .isolated:
        for (r, _) in parts { out.append(p[r]) }
    case .removed:
        for (r, isMatch) in parts where !isMatch { out.append(p[r]) }
    case .contiguous:
        var cur: Range<Int>? = nil
        var curMatch = false
        for (r, isMatch) in parts {
            if let c = cur, isMatch && curMatch {
                cur = c.lowerBound..<r.upperBound
            } else {
                if let c = cur { out.append(p[c]) }
                cur = r
                curMatch = isMatch
            }
        }
        if let c = cur { out.append(p[c]) }
    case .mergedWithPrevious:
        var cur: Range<Int>? = nil
        for (r, isMatch) in parts {
            if isMatch, let c = cur {
                cur = c.lowerBound..<r.upperBound
            } else {
                if let c = cur { out.append(p[c]) }
                cur = r
            }
        }
        if let c = cur { out.append(p[c]) }
    case .mergedWithNext:
        var pendingStart: Int? = nil
        for (r, isMatch) in parts {
            if isMatch {
                if let s = pendingStart { out.append(p[s..<r.lowerBound]) }
                pendingStart = r.lowerBound
            } else {
                out.append(p[(pendingStart ?? r.lowerBound)..<r.upperBound])
                pendingStart = nil
            }
        }
        if let s = pendingStart { out.append(p[s..<p.endIndex]) }
    }
}

// MARK: - Hand-written scanners for the regexes of GPT-2 and Llama 3 / Qwen2

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
func scanGPT2(_ p: Piece) -> [Range<Int>] {
    var out: [Range<Int>] = []
    let end = p.endIndex
    @inline(__always) func flags(_ i: Int) -> CharFlags? { i < end ? CharFlags.of(p[i]) : nil }
    var pos = p.startIndex
    while pos < end {
        let start = pos
        let c = p[pos]
        // contractions
        if c == "'" && pos + 1 < end {
            let c1 = p[pos + 1]
            if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" {
                pos += 2; out.append(start..<pos); continue
            }
            if pos + 2 < end {
                let c2 = p[pos + 2]
                if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                    pos += 3; out.append(start..<pos); continue
                }
            }
        }
        let f2 = c == " " ? flags(pos + 1) : flags(pos)
        if let f2 {
            if f2.contains(.letter) {
                if c == " " { pos += 1 }
                while let f = flags(pos), f.contains(.letter) { pos += 1 }
                out.append(start..<pos); continue
            }
            if f2.contains(.number) {
                if c == " " { pos += 1 }
                while let f = flags(pos), f.contains(.number) { pos += 1 }
                out.append(start..<pos); continue
            }
            if !f2.contains(.whitespace) {
                if c == " " { pos += 1 }
                while let f = flags(pos), !f.contains(.whitespace), !f.contains(.letter), !f.contains(.number) { pos += 1 }
                out.append(start..<pos); continue
            }
        }
        // \s+(?!\S)|\s+
        var n = 0
        while let f = flags(pos + n), f.contains(.whitespace) { n += 1 }
        if n > 1 && pos + n < end {
            pos += n - 1; out.append(start..<pos); continue
        }
        if n > 0 {
            pos += n; out.append(start..<pos); continue
        }
        pos += 1
        out.append(start..<pos)
    }
    return out
}

/// Llama 3 (maxDigits 3) and Qwen2 (maxDigits 1):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
func scanLlama3(_ p: Piece, maxDigits: Int) -> [Range<Int>] {
    var out: [Range<Int>] = []
    let end = p.endIndex
    @inline(__always) func flags(_ i: Int) -> CharFlags? { i < end ? CharFlags.of(p[i]) : nil }
    @inline(__always) func lower(_ i: Int) -> Unicode.Scalar? {
        guard i < end else { return nil }
        let c = p[i]
        if c.value >= 65 && c.value <= 90 { return Unicode.Scalar(c.value + 32) }
        return c
    }
    var pos = p.startIndex
    while pos < end {
        let start = pos
        let c = p[pos]
        let f = CharFlags.of(c)
        if c == "'" && pos + 1 < end {
            let c1 = lower(pos + 1)!
            if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" {
                pos += 2; out.append(start..<pos); continue
            }
            if let c2 = lower(pos + 2) {
                if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                    pos += 3; out.append(start..<pos); continue
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == "\r" || c == "\n" || f.contains(.number)) {
            if f.contains(.letter) || (flags(pos + 1)?.contains(.letter) ?? false) {
                pos += 1
                while let g = flags(pos), g.contains(.letter) { pos += 1 }
                out.append(start..<pos); continue
            }
        }
        // \p{N}{1,maxDigits}
        if f.contains(.number) {
            var k = 0
            while k < maxDigits, let g = flags(pos), g.contains(.number) { pos += 1; k += 1 }
            out.append(start..<pos); continue
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let f2 = c == " " ? flags(pos + 1) : f
        if let f2, !f2.contains(.whitespace), !f2.contains(.letter), !f2.contains(.number) {
            if c == " " { pos += 1 }
            while let g = flags(pos), !g.contains(.whitespace), !g.contains(.letter), !g.contains(.number) { pos += 1 }
            while pos < end && (p[pos] == "\r" || p[pos] == "\n") { pos += 1 }
            out.append(start..<pos); continue
        }
        // \s*[\r\n]+|\s+(?!\S)|\s+
        var n = 0
        var lastNewlineEnd = -1
        while let g = flags(pos + n), g.contains(.whitespace) {
            let cc = p[pos + n]
            if cc == "\r" || cc == "\n" { lastNewlineEnd = pos + n + 1 }
            n += 1
        }
        if lastNewlineEnd > 0 {
            pos = lastNewlineEnd; out.append(start..<pos); continue
        }
        if n > 1 && pos + n < end {
            pos += n - 1; out.append(start..<pos); continue
        }
        if n > 0 {
            pos += n; out.append(start..<pos); continue
        }
        pos += 1
        out.append(start..<pos)
    }
    return out
}

/// Recognises the regexes of well-known tokenizer.json files and maps them to hand-written scanners.
func knownSplitPattern(_ pattern: String) -> PreTokenizerStep? {
    let gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    switch pattern {
    case gpt2, #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#: return .gpt2
    case llama3: return .llama3(maxDigits: 3)
    case qwen2: return .llama3(maxDigits: 1)
    case #"\p{N}"#, #"\d"#: return .digits(individual: true)
    default: return nil
    }
}
