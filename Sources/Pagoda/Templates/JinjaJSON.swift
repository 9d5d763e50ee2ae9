import Foundation

// Ordered JSON decoding and Python-compatible printing (str, repr, json.dumps).

extension JinjaValue {
    /// Parses JSON text keeping the key order of objects (as Python's `json.loads` does).
    public static func parseJSON(_ text: String) throws -> JinjaValue {
        var p = JSONReader(bytes: Array(text.utf8))
        p.skipWhitespace()
        let v = try p.value()
        p.skipWhitespace()
        if p.pos != p.bytes.count { throw p.error("extra data after JSON value") }
        return v
    }
}

private struct JSONReader {
    let bytes: [UInt8]
    var pos = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    func error(_ msg: String) -> TemplateError {
        TemplateError("JSON: \(msg) at offset \(pos)")
    }

    mutating func skipWhitespace() {
        while pos < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[pos]) { pos += 1 }
    }

    mutating func literal(_ word: String, _ v: JinjaValue) throws -> JinjaValue {
        let w = Array(word.utf8)
        guard pos + w.count <= bytes.count, Array(bytes[pos..<pos + w.count]) == w else {
            throw error("invalid literal")
        }
        pos += w.count
        return v
    }

    mutating func value() throws -> JinjaValue {
        guard pos < bytes.count else { throw error("unexpected end") }
        switch bytes[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var o = JinjaObject()
            skipWhitespace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(o) }
            while true {
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw error("expected key") }
                let k = try string()
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':'") }
                pos += 1
                skipWhitespace()
                o[k] = try value()
                skipWhitespace()
                guard pos < bytes.count else { throw error("unexpected end") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(o) }
                throw error("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            pos += 1
            var a: [JinjaValue] = []
            skipWhitespace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(a) }
            while true {
                skipWhitespace()
                a.append(try value())
                skipWhitespace()
                guard pos < bytes.count else { throw error("unexpected end") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(a) }
                throw error("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .none)
        case UInt8(ascii: "N"): return try literal("NaN", .double(.nan))
        case UInt8(ascii: "I"): return try literal("Infinity", .double(.infinity))
        default:
            return try number()
        }
    }

    mutating func number() throws -> JinjaValue {
        let start = pos
        var isFloat = false
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "-") {
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "I") {
                _ = try literal("Infinity", .none)
                return .double(-.infinity)
            }
        }
        while pos < bytes.count {
            let c = bytes[pos]
            if c >= 0x30 && c <= 0x39 { pos += 1 }
            else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                || ((c == UInt8(ascii: "+") || c == UInt8(ascii: "-")) && isFloat) {
                isFloat = true
                pos += 1
            } else { break }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if text.isEmpty || text == "-" { throw error("invalid value") }
        if !isFloat, let i = Int(text) { return .int(i) }
        guard let d = Double(text) else { throw error("invalid number '\(text)'") }
        return .double(d)
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count,
              let v = UInt32(String(decoding: bytes[pos..<pos + 4], as: UTF8.self), radix: 16)
        else { throw error("invalid \\u escape") }
        pos += 4
        return v
    }

    mutating func string() throws -> String {
        pos += 1  // opening quote
        var out = [UInt8]()
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let c = bytes[pos]
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard pos < bytes.count else { throw error("unterminated string") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if code >= 0xD800 && code < 0xDC00, pos + 6 <= bytes.count,
                   bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                    let save = pos
                    pos += 2
                    let low = try hex4()
                    if low >= 0xDC00 && low < 0xE000 {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        pos = save
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Python printing

enum PyFormat {
    /// Python `repr(float)`.
    static func float(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description yields the shortest round-trip digits; re-layout them like Python.
        var s = "\(abs(d))"
        var exp = 0
        if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exp = Int(s[s.index(after: e)...])!
            s = String(s[..<e])
        }
        var intPart = s
        var fracPart = ""
        if let dot = s.firstIndex(of: ".") {
            intPart = String(s[..<dot])
            fracPart = String(s[s.index(after: dot)...])
        }
        var digits = intPart + fracPart
        var decpt = intPart.count + exp  // position of the decimal point relative to digits
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); decpt -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let sign = d < 0 ? "-" : ""
        if decpt > 16 || decpt < -3 {
            var m = String(digits.first!)
            if digits.count > 1 { m += "." + digits.dropFirst() }
            let e = decpt - 1
            let es = e < 0 ? "-" + pad2(-e) : "+" + pad2(e)
            return sign + m + "e" + es
        }
        if decpt <= 0 {
            return sign + "0." + String(repeating: "0", count: -decpt) + digits
        }
        if decpt >= digits.count {
            return sign + digits + String(repeating: "0", count: decpt - digits.count) + ".0"
        }
        let i = digits.index(digits.startIndex, offsetBy: decpt)
        return sign + digits[..<i] + "." + digits[i...]
    }

    private static func pad2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    /// Python `repr(str)`.
    static func reprString(_ s: String) -> String {
        let quote: Character = (s.contains("'") && !s.contains("\"")) ? "\"" : "'"
        var out = String(quote)
        for u in s.unicodeScalars {
            switch u {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(u) == quote { out += "\\" + String(quote) }
                else if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02x", u.value) }
                else if (0x80...0xA0).contains(u.value) { out += String(format: "\\x%02x", u.value) }
                else { out.unicodeScalars.append(u) }
            }
        }
        out.append(quote)
        return out
    }

    /// Python `str(value)` as Jinja prints it.
    static func str(_ v: JinjaValue) -> String {
        switch v {
        case .undefined: return ""
        case .string(let s): return s
        case .opaque(let o): if case .markup(let s) = o.kind { return s } else { return repr(v) }
        default: return repr(v)
        }
    }

    /// Python `repr(value)`.
    static func repr(_ v: JinjaValue) -> String {
        switch v {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return float(d)
        case .string(let s): return reprString(s)
        case .array(let a): return "[" + a.map(repr).joined(separator: ", ") + "]"
        case .object(let o):
            return "{" + o.valuePairs.map { repr($0.0) + ": " + repr($0.1) }.joined(separator: ", ") + "}"
        case .opaque(let op):
            switch op.kind {
            case .namespace:
                return "<Namespace " + repr(.object(op.attributes)) + ">"
            case .macro(let m): return "<Macro '\(m.definition.name)'>"
            case .builtin(let n): return "<function \(n)>"
            case .generator: return "<generator object>"
            case .loop: return "<LoopContext>"
            case .boundMethod(_, let n): return "<built-in method \(n)>"
            case .unsafeMethod: return ""
            case .markup(let s): return "Markup(" + reprString(s) + ")"
            case .tuple(let items):
                return items.count == 1 ? "(" + repr(items[0]) + ",)" : "(" + items.map(repr).joined(separator: ", ") + ")"
            }
        }
    }

    /// Python `json.dumps(value, ensure_ascii=..., indent=..., separators=..., sort_keys=...)`.
    static func json(_ v: JinjaValue, ensureASCII: Bool, indent: String?, itemSeparator: String? = nil,
                     keySeparator: String = ": ", sortKeys: Bool = false) throws -> String {
        var out = ""
        let itemSep = itemSeparator ?? (indent == nil ? ", " : ",")
        try writeJSON(v, into: &out, ensureASCII: ensureASCII, indent: indent, level: 0,
                      itemSep: itemSep, keySep: keySeparator, sortKeys: sortKeys)
        return out
    }

    private static func writeJSON(_ v: JinjaValue, into out: inout String, ensureASCII: Bool, indent: String?,
                                  level: Int, itemSep: String, keySep: String, sortKeys: Bool) throws {
        switch v {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" }
            else { out += float(d) }
        case .string(let s): out += jsonString(s, ensureASCII: ensureASCII)
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            let (open, sep, close) = layout(indent, level, itemSep)
            out += open
            for (i, x) in a.enumerated() {
                if i > 0 { out += sep }
                try writeJSON(x, into: &out, ensureASCII: ensureASCII, indent: indent, level: level + 1,
                              itemSep: itemSep, keySep: keySep, sortKeys: sortKeys)
            }
            out += close + "]"
        case .object(let o):
            if o.isEmpty { out += "{}"; return }
            out += "{"
            let (open, sep, close) = layout(indent, level, itemSep)
            out += open
            var pairs = o.pairs
            if sortKeys { pairs.sort { Array($0.0.unicodeScalars.map(\.value)).lexicographicallyPrecedes($1.0.unicodeScalars.map(\.value)) } }
            for (i, (k, x)) in pairs.enumerated() {
                if i > 0 { out += sep }
                out += jsonString(k, ensureASCII: ensureASCII) + keySep
                try writeJSON(x, into: &out, ensureASCII: ensureASCII, indent: indent, level: level + 1,
                              itemSep: itemSep, keySep: keySep, sortKeys: sortKeys)
            }
            out += close + "}"
        case .undefined:
            throw TemplateError("TypeError: Object of type Undefined is not JSON serializable")
        case .opaque(let op):
            if case .markup(let s) = op.kind { out += jsonString(s, ensureASCII: ensureASCII); return }
            if case .tuple = op.kind {
                try writeJSON(v.plain, into: &out, ensureASCII: ensureASCII, indent: indent, level: level,
                              itemSep: itemSep, keySep: keySep, sortKeys: sortKeys)
                return
            }
            if case .namespace = op.kind {
                throw TemplateError("TypeError: Object of type Namespace is not JSON serializable")
            }
            if case .generator = op.kind {
                throw TemplateError("TypeError: Object of type generator is not JSON serializable")
            }
            throw TemplateError("TypeError: Object of type \(repr(v)) is not JSON serializable")
        }
    }

    private static func layout(_ indent: String?, _ level: Int, _ itemSep: String) -> (String, String, String) {
        guard let indent else { return ("", itemSep, "") }
        let inner = "\n" + String(repeating: indent, count: level + 1)
        let outer = "\n" + String(repeating: indent, count: level)
        return (inner, itemSep + inner, outer)
    }

    static func jsonString(_ s: String, ensureASCII: Bool) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    out += String(format: "\\u%04x", u.value)
                } else if ensureASCII && u.value > 0x7E {
                    if u.value >= 0x10000 {
                        let v = u.value - 0x10000
                        out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        out += String(format: "\\u%04x", u.value)
                    }
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
