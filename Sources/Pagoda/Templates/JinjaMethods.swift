import Foundation

// Python string/dict/list methods, global functions and string formatting helpers.

/// Python's `str.isspace` characters.
func isPySpace(_ u: Unicode.Scalar) -> Bool {
    switch u.value {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
        return true
    default:
        return false
    }
}

func pyStrip(_ s: String, chars: String?, left: Bool, right: Bool) -> String {
    let u = Array(s.unicodeScalars)
    let set = chars.map { Set($0.unicodeScalars) }
    func strip(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isPySpace(c) }
    var lo = 0, hi = u.count
    if left { while lo < hi, strip(u[lo]) { lo += 1 } }
    if right { while hi > lo, strip(u[hi - 1]) { hi -= 1 } }
    return String(String.UnicodeScalarView(u[lo..<hi]))
}

func pyReplace(_ s: String, _ old: String, _ new: String, count: Int?) -> String {
    if let count, count >= 0 {
        if count == 0 { return s }
        if old.isEmpty {
            // Python inserts `new` between characters, limited by count.
            var out = ""
            var n = 0
            for c in s.unicodeScalars {
                if n < count { out += new; n += 1 }
                out.unicodeScalars.append(c)
            }
            if n < count { out += new }
            return out
        }
        var out = ""
        var rest = Substring(s)
        var n = 0
        while n < count, let r = rest.range(of: old) {
            out += rest[..<r.lowerBound] + new
            rest = rest[r.upperBound...]
            n += 1
        }
        return out + rest
    }
    if old.isEmpty {
        var out = new
        for c in s.unicodeScalars { out.unicodeScalars.append(c); out += new }
        return out
    }
    return s.replacingOccurrences(of: old, with: new)
}

func pyCapitalize(_ s: String) -> String {
    guard let f = s.unicodeScalars.first else { return s }
    return String(f).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
}

/// Python `str.title()`.
func pyTitle(_ s: String) -> String {
    var out = ""
    var prevCased = false
    for u in s.unicodeScalars {
        let ch = String(u)
        let cased = u.properties.isCased
        out += prevCased ? ch.lowercased() : ch.uppercased()
        prevCased = cased
    }
    return out
}

/// Jinja's `title` filter: capitalizes words split on whitespace, '-', '(', '{', '[', '<'.
func jinjaTitle(_ s: String) -> String {
    var out = ""
    var atStart = true
    for u in s.unicodeScalars {
        let isSep = isPySpace(u) || "-({[<".unicodeScalars.contains(u)
        if isSep {
            out.unicodeScalars.append(u)
            atStart = true
        } else {
            out += atStart ? String(u).uppercased() : String(u).lowercased()
            atStart = false
        }
    }
    return out
}

/// Python `str.splitlines()`.
func pySplitLines(_ s: String, keepEnds: Bool = false) -> [String] {
    var lines: [String] = []
    var cur = String.UnicodeScalarView()
    let u = Array(s.unicodeScalars)
    var i = 0
    while i < u.count {
        let c = u[i]
        let isBreak: Bool
        switch c.value {
        case 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029: isBreak = true
        default: isBreak = false
        }
        if isBreak {
            var end = String.UnicodeScalarView([c])
            if c == "\r", i + 1 < u.count, u[i + 1] == "\n" { end.append("\n"); i += 1 }
            if keepEnds { cur.append(contentsOf: end) }
            lines.append(String(cur))
            cur = String.UnicodeScalarView()
        } else {
            cur.append(c)
        }
        i += 1
    }
    if !cur.isEmpty { lines.append(String(cur)) }
    return lines
}

/// Jinja 3.1's `indent` filter.
func jinjaIndent(_ s: String, _ indention: String, first: Bool, blank: Bool) -> String {
    let lines = pySplitLines(s + "\n")
    var rv: String
    if blank {
        rv = lines.joined(separator: "\n" + indention)
    } else {
        rv = lines.first ?? ""
        let rest = lines.dropFirst()
        if !rest.isEmpty {
            rv += "\n" + rest.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n")
        }
    }
    if first { rv = indention + rv }
    return rv
}

func pyCenter(_ s: String, _ width: Int, _ fill: String) -> String {
    let n = s.unicodeScalars.count
    guard width > n else { return s }
    let total = width - n
    let left = total / 2 + (total & width & 1)
    return String(repeating: fill, count: left) + s + String(repeating: fill, count: total - left)
}

func htmlEscape(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&#34;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

/// Python `str.split(sep, maxsplit)`.
func pySplit(_ s: String, _ sep: String?, _ maxsplit: Int) -> [String] {
    let u = Array(s.unicodeScalars)
    var parts: [String] = []
    if let sep {
        let p = Array(sep.unicodeScalars)
        var start = 0, i = 0
        while i + p.count <= u.count {
            if (maxsplit < 0 || parts.count < maxsplit), Array(u[i..<i + p.count]) == p {
                parts.append(String(String.UnicodeScalarView(u[start..<i])))
                i += p.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(String(String.UnicodeScalarView(u[start...])))
        return parts
    }
    var i = 0
    while true {
        while i < u.count, isPySpace(u[i]) { i += 1 }
        if i >= u.count { break }
        if maxsplit >= 0, parts.count >= maxsplit {
            var end = u.count
            while end > i, isPySpace(u[end - 1]) { end -= 1 }
            parts.append(String(String.UnicodeScalarView(u[i..<end])))
            break
        }
        let start = i
        while i < u.count, !isPySpace(u[i]) { i += 1 }
        parts.append(String(String.UnicodeScalarView(u[start..<i])))
    }
    return parts
}

/// Python `str.rsplit(sep, maxsplit)`.
func pyRSplit(_ s: String, _ sep: String?, _ maxsplit: Int) -> [String] {
    if maxsplit < 0 { return pySplit(s, sep, -1) }
    let rev = String(String.UnicodeScalarView(s.unicodeScalars.reversed()))
    let revSep = sep.map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) }
    return pySplit(rev, revSep, maxsplit).reversed().map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) }
}

private func scalarIndex(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], reverse: Bool) -> Int {
    if needle.count > hay.count { return -1 }
    let range = Array(0...(hay.count - needle.count))
    for i in (reverse ? range.reversed() : range) where Array(hay[i..<i + needle.count]) == needle { return i }
    return -1
}

extension Interpreter {
    // MARK: builtins

    func callBuiltin(_ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch name {
        case "raise_exception":
            throw TemplateError(args.first.map(str) ?? "", kind: .raised)
        case "strftime_now":
            guard let f = args.first else { throw typeError("strftime_now() missing format") }
            return .string(strftime(str(f), now))
        case "namespace":
            let ns = JinjaOpaque(.namespace)
            for a in args {
                if case .object(let o) = a { for (k, v) in o.pairs { ns.attributes[k] = v } }
            }
            for (k, v) in kwargs { ns.attributes[k] = v }
            return .opaque(ns)
        case "dict":
            var o = JinjaObject()
            for a in args {
                if case .object(let d) = a { for (k, v) in d.pairs { o[k] = v } }
            }
            for (k, v) in kwargs { o[k] = v }
            return .object(o)
        case "range":
            let ints = try args.map { v -> Int in
                switch v {
                case .int(let i): return i
                case .bool(let b): return b ? 1 : 0
                default: throw typeError("'\(pyTypeName(v))' object cannot be interpreted as an integer")
                }
            }
            var start = 0, stop = 0, step = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: start = ints[0]; stop = ints[1]
            case 3: start = ints[0]; stop = ints[1]; step = ints[2]
            default: throw typeError("range expected 1 to 3 arguments, got \(ints.count)")
            }
            if step == 0 { throw TemplateError("ValueError: range() arg 3 must not be zero") }
            let r = Array(stride(from: start, to: stop, by: step))
            if r.count > 100_000 { throw TemplateError("OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).") }
            return .array(r.map { .int($0) })
        default:
            throw typeError("unknown function \(name)")
        }
    }

    // MARK: methods

    func callMethod(_ receiver: JinjaValue, _ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        let receiver = receiver.plain, args = args.map(\.plain), kwargs = kwargs.map { ($0.0, $0.1.plain) }
        func bind(_ names: [String]) throws -> BoundArguments { try BoundArguments(name, names, args, kwargs) }
        func intArg(_ v: JinjaValue?, _ def: Int) throws -> Int {
            guard let v else { return def }
            switch v {
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            case .none: return def
            default: throw typeError("'\(pyTypeName(v))' object cannot be interpreted as an integer")
            }
        }
        func strArg(_ v: JinjaValue?) throws -> String? {
            guard let v else { return nil }
            switch v {
            case .string(let s): return s
            case .none: return nil
            default: throw typeError("must be str or None, not \(pyTypeName(v))")
            }
        }
        switch receiver {
        case .string(let s):
            switch name {
            case "strip", "lstrip", "rstrip":
                let a = try bind(["chars"])
                return .string(pyStrip(s, chars: try strArg(a["chars"]), left: name != "rstrip", right: name != "lstrip"))
            case "split", "rsplit":
                let a = try bind(["sep", "maxsplit"])
                let sep = try strArg(a["sep"])
                if sep == "" { throw TemplateError("ValueError: empty separator") }
                let max = try intArg(a["maxsplit"], -1)
                let parts = name == "split" ? pySplit(s, sep, max) : pyRSplit(s, sep, max)
                return .array(parts.map { .string($0) })
            case "splitlines":
                let a = try bind(["keepends"])
                return .array(pySplitLines(s, keepEnds: truthy(a["keepends"] ?? .bool(false))).map { .string($0) })
            case "startswith", "endswith":
                let a = try bind(["prefix", "start", "end"])
                var sub = s
                if a["start"] != nil || a["end"] != nil {
                    guard case .string(let x) = try slice(receiver, a["start"], a["end"], nil) else { return .bool(false) }
                    sub = x
                }
                let candidates: [JinjaValue]
                switch a["prefix"] {
                case .array(let xs)?: candidates = xs
                case let x?: candidates = [x]
                case nil: throw typeError("\(name)() takes at least 1 argument (0 given)")
                }
                for c in candidates {
                    guard case .string(let p) = c else {
                        throw typeError("\(name) first arg must be str or a tuple of str, not \(pyTypeName(c))")
                    }
                    let su = Array(sub.unicodeScalars), pu = Array(p.unicodeScalars)
                    if pu.count <= su.count {
                        let part = name == "startswith" ? Array(su[..<pu.count]) : Array(su[(su.count - pu.count)...])
                        if part == pu { return .bool(true) }
                    }
                }
                return .bool(false)
            case "upper": return .string(s.uppercased())
            case "lower", "casefold": return .string(s.lowercased())
            case "title": return .string(pyTitle(s))
            case "capitalize": return .string(pyCapitalize(s))
            case "swapcase":
                return .string(String(s.unicodeScalars.map { u -> String in
                    let c = String(u)
                    return c == c.uppercased() ? c.lowercased() : c.uppercased()
                }.joined()))
            case "replace":
                let a = try bind(["old", "new", "count"])
                guard let old = try strArg(a["old"]), let new = try strArg(a["new"]) else {
                    throw typeError("replace() expects two strings")
                }
                let c = try intArg(a["count"], -1)
                return .string(pyReplace(s, old, new, count: c < 0 ? nil : c))
            case "find", "rfind", "index", "rindex":
                let a = try bind(["sub", "start", "end"])
                guard let sub = try strArg(a["sub"]) else { throw typeError("\(name)() expects a string") }
                let u = Array(s.unicodeScalars)
                let start = try intArg(a["start"], 0), end = try intArg(a["end"], u.count)
                func clamp(_ i: Int) -> Int { i < 0 ? max(0, i + u.count) : min(i, u.count) }
                let lo = clamp(start), hi = clamp(end)
                var r = -1
                if lo <= hi {
                    let i = scalarIndex(Array(u[lo..<hi]), Array(sub.unicodeScalars), reverse: name.hasPrefix("r"))
                    if i >= 0 { r = i + lo }
                }
                if r < 0 && (name == "index" || name == "rindex") { throw TemplateError("ValueError: substring not found") }
                return .int(r)
            case "count":
                let a = try bind(["sub"])
                guard let sub = try strArg(a["sub"]) else { throw typeError("count() expects a string") }
                if sub.isEmpty { return .int(s.unicodeScalars.count + 1) }
                return .int(s.components(separatedBy: sub).count - 1)
            case "join":
                let a = try bind(["iterable"])
                let items = try iterate(a["iterable"] ?? .array([]))
                return .string(try items.map { v -> String in
                    guard case .string(let x) = v else {
                        throw typeError("sequence item: expected str instance, \(pyTypeName(v)) found")
                    }
                    return x
                }.joined(separator: s))
            case "format":
                return .string(try pyFormatMethod(s, args, kwargs))
            case "isdigit", "isnumeric", "isdecimal":
                return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType != nil })
            case "isalpha":
                return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic })
            case "isalnum":
                return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
            case "isspace":
                return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(isPySpace))
            case "isupper":
                return .bool(s.unicodeScalars.contains { $0.properties.isCased } && s == s.uppercased())
            case "islower":
                return .bool(s.unicodeScalars.contains { $0.properties.isCased } && s == s.lowercased())
            case "istitle":
                return .bool(s.unicodeScalars.contains { $0.properties.isCased } && s == pyTitle(s))
            case "zfill":
                let width = try intArg(args.first, 0)
                let n = s.unicodeScalars.count
                if n >= width { return receiver }
                var body = s, sign = ""
                if s.hasPrefix("-") || s.hasPrefix("+") { sign = String(s.first!); body = String(s.dropFirst()) }
                return .string(sign + String(repeating: "0", count: width - n) + body)
            case "center", "ljust", "rjust":
                let width = try intArg(args.first, 0)
                let fill = args.count > 1 ? str(args[1]) : " "
                let n = s.unicodeScalars.count
                if n >= width { return receiver }
                if name == "center" { return .string(pyCenter(s, width, fill)) }
                let pad = String(repeating: fill, count: width - n)
                return .string(name == "ljust" ? s + pad : pad + s)
            case "partition", "rpartition":
                guard let sep = try strArg(args.first) else { throw typeError("\(name)() expects a string") }
                let r = name == "partition" ? s.range(of: sep) : s.range(of: sep, options: .backwards)
                guard let r else {
                    return name == "partition" ? .array([.string(s), "", ""]) : .array(["", "", .string(s)])
                }
                return .array([.string(String(s[..<r.lowerBound])), .string(sep), .string(String(s[r.upperBound...]))])
            case "removeprefix":
                let p = try strArg(args.first) ?? ""
                return .string(s.hasPrefix(p) ? String(s.dropFirst(p.count)) : s)
            case "removesuffix":
                let p = try strArg(args.first) ?? ""
                return .string(s.hasSuffix(p) && !p.isEmpty ? String(s.dropLast(p.count)) : s)
            case "expandtabs":
                return .string(s.replacingOccurrences(of: "\t", with: "        "))
            default: break
            }
        case .object(let o):
            switch name {
            case "get":
                let a = try bind(["key", "default"])
                guard let key = a["key"] else { throw typeError("get expected at least 1 argument") }
                return o[value: key] ?? (a["default"] ?? .none)
            case "items": return .array(o.valuePairs.map { .tuple([$0.0, $0.1]) })
            case "keys": return .array(o.keyValues)
            case "values": return .array(o.values)
            case "copy": return receiver
            default: break
            }
        case .array(let a):
            switch name {
            case "index":
                guard let x = args.first, let i = a.firstIndex(where: { pyEqual($0, x) }) else {
                    throw TemplateError("ValueError: value is not in list")
                }
                return .int(i)
            case "count":
                guard let x = args.first else { throw typeError("count() takes exactly one argument") }
                return .int(a.filter { pyEqual($0, x) }.count)
            case "copy": return receiver
            default: break
            }
        case .opaque(let op):
            if case .loop(let st) = op.kind, name == "cycle" {
                guard !args.isEmpty else { throw TemplateError("no items for cycling given") }
                return args[st.index0 % args.count]
            }
        default: break
        }
        throw typeError("'\(pyTypeName(receiver))' object has no method '\(name)'")
    }

    // MARK: string formatting

    /// Python `str.format` with auto/explicit positional and keyword fields (basic format specs).
    func pyFormatMethod(_ fmt: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> String {
        let kw = JinjaObject(kwargs)
        var out = ""
        var auto = 0
        let u = Array(fmt.unicodeScalars)
        var i = 0
        while i < u.count {
            let c = u[i]
            if c == "{" {
                if i + 1 < u.count, u[i + 1] == "{" { out += "{"; i += 2; continue }
                guard let close = u[i...].firstIndex(of: "}") else { throw TemplateError("ValueError: Single '{' encountered in format string") }
                let field = String(String.UnicodeScalarView(u[(i + 1)..<close]))
                var name = field, spec = ""
                if let colon = field.firstIndex(of: ":") { name = String(field[..<colon]); spec = String(field[field.index(after: colon)...]) }
                var conversion: String?
                if let bang = name.firstIndex(of: "!") { conversion = String(name[name.index(after: bang)...]); name = String(name[..<bang]) }
                var value: JinjaValue
                if name.isEmpty {
                    guard auto < args.count else { throw TemplateError("IndexError: Replacement index \(auto) out of range for positional args tuple") }
                    value = args[auto]; auto += 1
                } else if let idx = Int(name) {
                    guard idx < args.count else { throw TemplateError("IndexError: Replacement index \(idx) out of range for positional args tuple") }
                    value = args[idx]
                } else {
                    let parts = name.split(separator: ".").map(String.init)
                    guard let v = kw[parts[0]] else { throw TemplateError("KeyError: '\(parts[0])'") }
                    value = v
                    for p in parts.dropFirst() { value = try getAttribute(value, p) }
                }
                var text = conversion == "r" ? PyFormat.repr(value) : str(value)
                if !spec.isEmpty { text = try applyFormatSpec(value, text, spec) }
                out += text
                i = close + 1
            } else if c == "}" {
                if i + 1 < u.count, u[i + 1] == "}" { out += "}"; i += 2; continue }
                throw TemplateError("ValueError: Single '}' encountered in format string")
            } else {
                out.unicodeScalars.append(c)
                i += 1
            }
        }
        return out
    }

    private func applyFormatSpec(_ value: JinjaValue, _ text: String, _ spec: String) throws -> String {
        // [[fill]align][width][.precision][type]
        var s = Array(spec.unicodeScalars)
        var fill: Unicode.Scalar = " "
        var align: Unicode.Scalar?
        if s.count >= 2, "<>^=".unicodeScalars.contains(s[1]) { fill = s[0]; align = s[1]; s.removeFirst(2) }
        else if let f = s.first, "<>^=".unicodeScalars.contains(f) { align = f; s.removeFirst() }
        var widthText = ""
        while let f = s.first, f.properties.numericType != nil { widthText.unicodeScalars.append(f); s.removeFirst() }
        var body = text
        if s.first == "." {
            s.removeFirst()
            var p = ""
            while let f = s.first, f.properties.numericType != nil { p.unicodeScalars.append(f); s.removeFirst() }
            if let prec = Int(p), let x = number(value), s.first == "f" || s.first == nil {
                body = String(format: "%.\(prec)f", x)
            } else if let prec = Int(p), case .string = value {
                body = String(String.UnicodeScalarView(text.unicodeScalars.prefix(prec)))
            }
        } else if s.first == "d", case .int(let i) = value {
            body = String(i)
        }
        let width = Int(widthText) ?? 0
        let n = body.unicodeScalars.count
        if width <= n { return body }
        let pad = width - n
        let f = String(fill)
        let defaultRight = number(value) != nil && !(value == .none)
        switch align ?? (defaultRight ? ">" : "<") {
        case ">": return String(repeating: f, count: pad) + body
        case "^": return String(repeating: f, count: pad / 2) + body + String(repeating: f, count: pad - pad / 2)
        default: return body + String(repeating: f, count: pad)
        }
    }

    /// printf-style `%` formatting: %s %r %d %i %f %x %o %e %%, with flags/width/precision.
    func percentFormat(_ fmt: String, _ args: [JinjaValue]) throws -> String {
        var out = ""
        var argIndex = 0
        let u = Array(fmt.unicodeScalars)
        var i = 0
        func nextArg() throws -> JinjaValue {
            guard argIndex < args.count else { throw typeError("not enough arguments for format string") }
            defer { argIndex += 1 }
            return args[argIndex]
        }
        while i < u.count {
            let c = u[i]
            if c != "%" { out.unicodeScalars.append(c); i += 1; continue }
            i += 1
            guard i < u.count else { throw TemplateError("ValueError: incomplete format") }
            var flags = ""
            while i < u.count, "-+ #0".unicodeScalars.contains(u[i]) { flags.unicodeScalars.append(u[i]); i += 1 }
            var width = ""
            while i < u.count, u[i].properties.numericType != nil, u[i].isASCII { width.unicodeScalars.append(u[i]); i += 1 }
            var precision: String?
            if i < u.count, u[i] == "." {
                i += 1
                var p = ""
                while i < u.count, u[i].properties.numericType != nil, u[i].isASCII { p.unicodeScalars.append(u[i]); i += 1 }
                precision = p
            }
            guard i < u.count else { throw TemplateError("ValueError: incomplete format") }
            let conv = u[i]
            i += 1
            var body: String
            switch conv {
            case "%": out += "%"; continue
            case "s": body = str(try nextArg()); if let p = precision, let n = Int(p) { body = String(String.UnicodeScalarView(body.unicodeScalars.prefix(n))) }
            case "r", "a": body = PyFormat.repr(try nextArg())
            case "d", "i", "u":
                let v = try nextArg()
                guard let x = number(v) else { throw typeError("%d format: a real number is required, not \(pyTypeName(v))") }
                body = String(Int(x.rounded(.towardZero)))
                if flags.contains("+") && x >= 0 { body = "+" + body }
            case "f", "F", "e", "E", "g", "G":
                let v = try nextArg()
                guard let x = number(v) else { throw typeError("must be real number, not \(pyTypeName(v))") }
                body = String(format: "%\(flags.contains("+") ? "+" : "").\(precision ?? "6")\(Character(conv))", x)
            case "x", "X", "o":
                let v = try nextArg()
                guard case .int(let x) = v else { throw typeError("%\(conv) format: an integer is required") }
                body = String(x, radix: conv == "o" ? 8 : 16, uppercase: conv == "X")
            case "c":
                body = str(try nextArg())
            default:
                throw TemplateError("ValueError: unsupported format character '\(conv)'")
            }
            if let w = Int(width), w > body.unicodeScalars.count {
                let pad = w - body.unicodeScalars.count
                if flags.contains("-") { body += String(repeating: " ", count: pad) }
                else if flags.contains("0") && conv != "s" { body = String(repeating: "0", count: pad) + body }
                else { body = String(repeating: " ", count: pad) + body }
            }
            out += body
        }
        if argIndex < args.count && !(args.count == 1 && argIndex == 0 && fmt.isEmpty) {
            if argIndex < args.count { throw typeError("not all arguments converted during string formatting") }
        }
        return out
    }

    // MARK: strftime

    func strftime(_ fmt: String, _ date: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday, .nanosecond], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                      "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let year = c.year!, month = c.month!, day = c.day!, hour = c.hour!, minute = c.minute!, second = c.second!
        let weekday = c.weekday! - 1  // 0 = Sunday
        let yday = cal.ordinality(of: .day, in: .year, for: date) ?? 1
        func pad(_ n: Int, _ w: Int = 2, _ p: Character = "0") -> String {
            let s = String(n)
            return s.count >= w ? s : String(repeating: p, count: w - s.count) + s
        }
        var out = ""
        var it = fmt.makeIterator()
        while let ch = it.next() {
            guard ch == "%" else { out.append(ch); continue }
            guard var code = it.next() else { out.append("%"); break }
            var noPad = false
            if code == "-" { noPad = true; code = it.next() ?? "-" }
            func num(_ n: Int, _ w: Int = 2) -> String { noPad ? String(n) : pad(n, w) }
            switch code {
            case "Y": out += String(year)
            case "y": out += num(year % 100)
            case "m": out += num(month)
            case "d": out += num(day)
            case "e": out += noPad ? String(day) : pad(day, 2, " ")
            case "H": out += num(hour)
            case "I": out += num(hour % 12 == 0 ? 12 : hour % 12)
            case "M": out += num(minute)
            case "S": out += num(second)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "B": out += months[month - 1]
            case "b", "h": out += String(months[month - 1].prefix(3))
            case "A": out += days[weekday]
            case "a": out += String(days[weekday].prefix(3))
            case "j": out += num(yday, 3)
            case "w": out += String(weekday)
            case "u": out += String(weekday == 0 ? 7 : weekday)
            case "f": out += pad((c.nanosecond ?? 0) / 1000, 6)
            case "Z": out += "UTC"
            case "z": out += "+0000"
            case "F": out += "\(year)-\(pad(month))-\(pad(day))"
            case "T": out += "\(pad(hour)):\(pad(minute)):\(pad(second))"
            case "D": out += "\(pad(month))/\(pad(day))/\(pad(year % 100))"
            case "%": out += "%"
            default: out.append("%"); if noPad { out.append("-") }; out.append(code)
            }
        }
        return out
    }
}
