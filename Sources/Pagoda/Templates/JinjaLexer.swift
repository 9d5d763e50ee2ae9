import Foundation

/// An error while parsing or rendering a template.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case syntax, runtime, raised }
    public var kind: Kind
    public var message: String
    public var line: Int?
    public var column: Int?

    public init(_ message: String, kind: Kind = .runtime, line: Int? = nil, column: Int? = nil) {
        self.message = message
        self.kind = kind
        self.line = line
        self.column = column
    }

    public var description: String {
        var prefix: String
        switch kind {
        case .syntax: prefix = "template syntax error"
        case .runtime: prefix = "template error"
        case .raised: prefix = "template raised an exception"
        }
        if let line {
            prefix += " at line \(line)"
            if let column { prefix += ", column \(column)" }
        }
        return prefix + ": " + message
    }
}

enum JinjaTokenKind: Equatable {
    case text(String)
    case varBegin, varEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case int(Int)
    case float(Double)
    case op(String)
    case eof
}

struct Token {
    var kind: JinjaTokenKind
    var line: Int
    var column: Int
}

/// Splits template source into text and tag tokens, applying Jinja's whitespace rules
/// with `trim_blocks=True`, `lstrip_blocks=True`, `keep_trailing_newline=False`.
struct JinjaLexer {
    private let src: [UInt8]
    private var pos = 0
    private var tokens: [Token] = []
    private var lineStarts: [Int] = [0]

    init(_ source: String) {
        var s = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if s.hasSuffix("\n") { s.removeLast() }
        src = Array(s.utf8)
        for (i, b) in src.enumerated() where b == 0x0A { lineStarts.append(i + 1) }
    }

    private func location(_ offset: Int) -> (Int, Int) {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (lo + 1, offset - lineStarts[lo] + 1)
    }

    private func error(_ msg: String, at offset: Int) -> TemplateError {
        let (l, c) = location(offset)
        return TemplateError(msg, kind: .syntax, line: l, column: c)
    }

    private mutating func emit(_ kind: JinjaTokenKind, at offset: Int) {
        let (l, c) = location(offset)
        tokens.append(Token(kind: kind, line: l, column: c))
    }

    private func byte(_ i: Int) -> UInt8 { i < src.count ? src[i] : 0 }

    private func startsWith(_ s: String, at i: Int) -> Bool {
        let b = Array(s.utf8)
        guard i + b.count <= src.count else { return false }
        for k in 0..<b.count where src[i + k] != b[k] { return false }
        return true
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C }

    private func findTagStart(from i: Int) -> Int {
        var k = i
        while k + 1 < src.count {
            if src[k] == UInt8(ascii: "{") {
                let n = src[k + 1]
                if n == UInt8(ascii: "{") || n == UInt8(ascii: "%") || n == UInt8(ascii: "#") { return k }
            }
            k += 1
        }
        return src.count
    }

    mutating func tokenize() throws -> [Token] {
        // What the previous tag asked for the following text: strip all leading whitespace (`-`)
        // or remove one newline (trim_blocks).
        var stripNext = false
        var trimNewline = false
        while pos < src.count {
            let tagStart = findTagStart(from: pos)
            var textStart = pos
            var textEnd = tagStart
            if stripNext {
                while textStart < textEnd, Self.isSpace(src[textStart]) { textStart += 1 }
            } else if trimNewline, textStart < textEnd, src[textStart] == 0x0A {
                textStart += 1
            }
            stripNext = false
            trimNewline = false
            if tagStart < src.count {
                let kind = src[tagStart + 1]
                let sign = byte(tagStart + 2)
                if sign == UInt8(ascii: "-") {
                    while textEnd > textStart, Self.isSpace(src[textEnd - 1]) { textEnd -= 1 }
                } else if sign != UInt8(ascii: "+") && kind != UInt8(ascii: "{") {
                    // lstrip_blocks: drop spaces/tabs between the line start and a block/comment tag.
                    var k = textEnd
                    while k > textStart, src[k - 1] != 0x0A, Self.isSpace(src[k - 1]) { k -= 1 }
                    let atLineStart = k > textStart ? src[k - 1] == 0x0A : (k == 0 || src[k - 1] == 0x0A)
                    if atLineStart { textEnd = k }
                }
            }
            if textEnd > textStart {
                emit(.text(String(decoding: src[textStart..<textEnd], as: UTF8.self)), at: textStart)
            }
            if tagStart >= src.count { break }
            let kind = src[tagStart + 1]
            var p = tagStart + 2
            if byte(p) == UInt8(ascii: "-") || byte(p) == UInt8(ascii: "+") { p += 1 }
            if kind == UInt8(ascii: "#") {
                var k = p
                while k + 1 < src.count, !(src[k] == UInt8(ascii: "#") && src[k + 1] == UInt8(ascii: "}")) { k += 1 }
                if k + 1 >= src.count { throw error("unclosed comment", at: tagStart) }
                let prev = k > p ? src[k - 1] : 0
                if prev == UInt8(ascii: "-") { stripNext = true } else if prev != UInt8(ascii: "+") { trimNewline = true }
                pos = k + 2
                continue
            }
            if kind == UInt8(ascii: "%"), let rawEnd = try rawBlock(tagStart: tagStart, bodyStart: p) {
                pos = rawEnd.next
                stripNext = rawEnd.strip
                trimNewline = !rawEnd.strip && !rawEnd.keep
                continue
            }
            let isBlock = kind == UInt8(ascii: "%")
            emit(isBlock ? .blockBegin : .varBegin, at: tagStart)
            pos = p
            let end = try lexInside(block: isBlock, tagStart: tagStart)
            stripNext = end.strip
            trimNewline = isBlock && !end.strip && !end.keep
        }
        emit(.eof, at: src.count)
        return tokens
    }

    /// Handles `{% raw %}...{% endraw %}`; returns nil when the tag is not `raw`.
    private mutating func rawBlock(tagStart: Int, bodyStart: Int) throws -> (next: Int, strip: Bool, keep: Bool)? {
        var k = bodyStart
        while Self.isSpace(byte(k)) { k += 1 }
        guard startsWith("raw", at: k), !isNameByte(byte(k + 3)) else { return nil }
        k += 3
        while Self.isSpace(byte(k)) { k += 1 }
        var stripInner = false
        if byte(k) == UInt8(ascii: "-") { stripInner = true; k += 1 } else if byte(k) == UInt8(ascii: "+") { k += 1 }
        guard startsWith("%}", at: k) else { throw error("expected end of raw tag", at: k) }
        var contentStart = k + 2
        if stripInner { while Self.isSpace(byte(contentStart)) { contentStart += 1 } }
        // find {% endraw %}
        var s = contentStart
        while s < src.count {
            if startsWith("{%", at: s) {
                var q = s + 2
                let stripBefore = byte(q) == UInt8(ascii: "-")
                if byte(q) == UInt8(ascii: "-") || byte(q) == UInt8(ascii: "+") { q += 1 }
                while Self.isSpace(byte(q)) { q += 1 }
                if startsWith("endraw", at: q) {
                    q += 6
                    while Self.isSpace(byte(q)) { q += 1 }
                    var strip = false, keep = false
                    if byte(q) == UInt8(ascii: "-") { strip = true; q += 1 } else if byte(q) == UInt8(ascii: "+") { keep = true; q += 1 }
                    guard startsWith("%}", at: q) else { throw error("expected end of endraw tag", at: q) }
                    var contentEnd = s
                    if stripBefore { while contentEnd > contentStart, Self.isSpace(src[contentEnd - 1]) { contentEnd -= 1 } }
                    if contentEnd > contentStart {
                        emit(.text(String(decoding: src[contentStart..<contentEnd], as: UTF8.self)), at: contentStart)
                    }
                    return (q + 2, strip, keep)
                }
            }
            s += 1
        }
        throw error("unclosed raw block", at: tagStart)
    }

    private func isNameByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b >= 0x80
    }

    /// Lexes expression tokens until the closing `%}` / `}}`.
    private mutating func lexInside(block: Bool, tagStart: Int) throws -> (strip: Bool, keep: Bool) {
        let close = block ? "%}" : "}}"
        while true {
            while pos < src.count, Self.isSpace(src[pos]) { pos += 1 }
            if pos >= src.count {
                throw error(block ? "unclosed block tag '{%'" : "unclosed expression '{{'", at: tagStart)
            }
            if startsWith("-" + close, at: pos) {
                emit(block ? .blockEnd : .varEnd, at: pos)
                pos += 3
                return (true, false)
            }
            if startsWith("+" + close, at: pos) {
                emit(block ? .blockEnd : .varEnd, at: pos)
                pos += 3
                return (false, true)
            }
            if startsWith(close, at: pos) {
                emit(block ? .blockEnd : .varEnd, at: pos)
                pos += 2
                return (false, false)
            }
            let c = src[pos]
            let start = pos
            if isNameByte(c) && !(c >= 0x30 && c <= 0x39) {
                while pos < src.count, isNameByte(src[pos]) { pos += 1 }
                emit(.name(String(decoding: src[start..<pos], as: UTF8.self)), at: start)
            } else if c >= 0x30 && c <= 0x39 {
                try lexNumber()
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                try lexString(quote: c)
            } else {
                let two = pos + 1 < src.count ? String(decoding: src[pos...pos + 1], as: UTF8.self) : ""
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    emit(.op(two), at: pos)
                    pos += 2
                } else if "+-*/%~<>=.,:|()[]{}".utf8.contains(c) {
                    emit(.op(String(UnicodeScalar(c))), at: pos)
                    pos += 1
                } else {
                    throw error("unexpected character '\(String(decoding: [c], as: UTF8.self))'", at: pos)
                }
            }
        }
    }

    private mutating func lexNumber() throws {
        let start = pos
        func digits() { while pos < src.count, (src[pos] >= 0x30 && src[pos] <= 0x39) || src[pos] == UInt8(ascii: "_") { pos += 1 } }
        digits()
        var isFloat = false
        if byte(pos) == UInt8(ascii: "."), byte(pos + 1) >= 0x30, byte(pos + 1) <= 0x39 {
            isFloat = true
            pos += 1
            digits()
        }
        if byte(pos) == UInt8(ascii: "e") || byte(pos) == UInt8(ascii: "E") {
            var k = pos + 1
            if byte(k) == UInt8(ascii: "+") || byte(k) == UInt8(ascii: "-") { k += 1 }
            if byte(k) >= 0x30 && byte(k) <= 0x39 {
                isFloat = true
                pos = k
                digits()
            }
        }
        let text = String(decoding: src[start..<pos], as: UTF8.self).replacingOccurrences(of: "_", with: "")
        if isFloat {
            guard let d = Double(text) else { throw error("invalid number '\(text)'", at: start) }
            emit(.float(d), at: start)
        } else {
            guard let i = Int(text) else { throw error("integer literal too large '\(text)'", at: start) }
            emit(.int(i), at: start)
        }
    }

    private mutating func lexString(quote: UInt8) throws {
        let start = pos
        pos += 1
        var out = [UInt8]()
        while true {
            guard pos < src.count else { throw error("unterminated string literal", at: start) }
            let c = src[pos]
            pos += 1
            if c == quote { break }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard pos < src.count else { throw error("unterminated string literal", at: start) }
            let e = src[pos]
            pos += 1
            func appendScalar(_ v: UInt32) { out.append(contentsOf: Array(String(Character(Unicode.Scalar(v) ?? "\u{FFFD}")).utf8)) }
            func hex(_ n: Int) throws -> UInt32 {
                guard pos + n <= src.count, let v = UInt32(String(decoding: src[pos..<pos + n], as: UTF8.self), radix: 16) else {
                    throw error("invalid escape in string literal", at: pos)
                }
                pos += n
                return v
            }
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "0"): out.append(0x00)
            case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): out.append(e)
            case 0x0A: break  // line continuation
            case UInt8(ascii: "x"): appendScalar(try hex(2))
            case UInt8(ascii: "u"): appendScalar(try hex(4))
            case UInt8(ascii: "U"): appendScalar(try hex(8))
            default: out.append(UInt8(ascii: "\\")); out.append(e)
            }
        }
        emit(.string(String(decoding: out, as: UTF8.self)), at: start)
    }
}
