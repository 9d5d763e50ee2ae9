import Foundation

/// Binds positional and keyword arguments to named parameters, Python style.
struct BoundArguments {
    private var values: [String: JinjaValue] = [:]

    init(_ function: String, _ names: [String], _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws {
        if args.count > names.count {
            throw typeError("\(function)() takes at most \(names.count) arguments (\(args.count) given)")
        }
        for (i, a) in args.enumerated() { values[names[i]] = a }
        for (k, v) in kwargs {
            guard names.contains(k) else { throw typeError("\(function)() got an unexpected keyword argument '\(k)'") }
            values[k] = v
        }
    }

    subscript(_ name: String) -> JinjaValue? {
        guard let v = values[name] else { return nil }
        if case .undefined = v { return nil }
        return v
    }
}

extension Interpreter {
    func generator(_ items: [JinjaValue]) -> JinjaValue { .opaque(JinjaOpaque(.generator(items))) }

    func str(_ v: JinjaValue) -> String { PyFormat.str(v) }

    // MARK: filters

    func applyFilter(_ name: String, _ value: JinjaValue, _ argExprs: [Argument], _ scope: Scope) throws -> JinjaValue {
        let (args, kwargs) = try evalArguments(argExprs, scope)
        return try filter(name, value, args, kwargs)
    }

    func filter(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch name {
        case "safe":
            if value.isMarkup { return value }
            return .opaque(JinjaOpaque(.markup(str(value))))
        case "escape", "e":
            if value.isMarkup { return value }
            return .opaque(JinjaOpaque(.markup(htmlEscape(str(value)))))
        case "forceescape":
            return .opaque(JinjaOpaque(.markup(htmlEscape(str(value)))))
        case "string":
            return value.isMarkup ? value : .string(str(value))
        default:
            break
        }
        let value = value.plain, args = args.map(\.plain), kwargs = kwargs.map { ($0.0, $0.1.plain) }
        func bind(_ names: [String]) throws -> BoundArguments { try BoundArguments(name, names, args, kwargs) }
        switch name {
        case "tojson":
            let a = try bind(["ensure_ascii", "indent", "separators", "sort_keys"])
            var indent: String?
            switch a["indent"] {
            case .int(let n)?: indent = String(repeating: " ", count: max(0, n))
            case .string(let s)?: indent = s
            default: indent = nil
            }
            var itemSep: String?
            var keySep = ": "
            if let seps = a["separators"], case .array(let parts) = seps, parts.count == 2 {
                itemSep = str(parts[0])
                keySep = str(parts[1])
            }
            return .string(try PyFormat.json(value, ensureASCII: truthy(a["ensure_ascii"] ?? .bool(false)),
                                             indent: indent, itemSeparator: itemSep, keySeparator: keySep,
                                             sortKeys: truthy(a["sort_keys"] ?? .bool(false))))
        case "length", "count":
            return .int(try length(value))
        case "trim":
            let a = try bind(["chars"])
            return .string(pyStrip(str(value), chars: a["chars"].map(str), left: true, right: true))
        case "upper":
            return .string(str(value).uppercased())
        case "lower":
            return .string(str(value).lowercased())
        case "capitalize":
            return .string(pyCapitalize(str(value)))
        case "title":
            return .string(jinjaTitle(str(value)))
        case "default", "d":
            let a = try bind(["default_value", "boolean"])
            let useDefault = truthy(a["boolean"] ?? .bool(false)) ? !truthy(value) : value.isUndefined
            if useDefault { return args.first ?? kwargs.first(where: { $0.0 == "default_value" })?.1 ?? .string("") }
            return value
        case "join":
            let a = try bind(["d", "attribute"])
            var items = try iterate(value)
            if let attr = a["attribute"] { items = try items.map { try attributePath($0, attr) } }
            return .string(items.map(str).joined(separator: a["d"].map(str) ?? ""))
        case "list":
            return .array(try iterate(value))
        case "first":
            return try iterate(value).first ?? .undefined
        case "last":
            if case .opaque = value { throw typeError("'generator' object is not reversible") }
            return try iterate(value).last ?? .undefined
        case "reverse":
            if case .string(let s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return generator(try iterate(value).reversed())
        case "items":
            if case .undefined = value { return generator([]) }
            guard case .object(let o) = value else { throw TemplateError("FilterArgumentError: can only get item pairs from a mapping.") }
            return generator(o.valuePairs.map { .tuple([$0.0, $0.1]) })
        case "dictsort":
            let a = try bind(["case_sensitive", "by", "reverse"])
            guard case .object(let o) = value else { throw typeError("dictsort expects a mapping, got '\(pyTypeName(value))'") }
            let caseSensitive = truthy(a["case_sensitive"] ?? .bool(false))
            let byValue = a["by"].map(str) == "value"
            let pairs = o.valuePairs.map { JinjaValue.tuple([$0.0, $0.1]) }
            let sorted = try stableSort(pairs, reverse: truthy(a["reverse"] ?? .bool(false))) { item in
                guard case .array(let kv) = item.plain else { return item }
                let k = byValue ? kv[1] : kv[0]
                return caseSensitive ? k : self.lowercasedIfString(k)
            }
            return .array(sorted)
        case "sort":
            let a = try bind(["reverse", "case_sensitive", "attribute"])
            let caseSensitive = truthy(a["case_sensitive"] ?? .bool(false))
            let attr = a["attribute"]
            return .array(try stableSort(try iterate(value), reverse: truthy(a["reverse"] ?? .bool(false))) { item in
                let k = try attr.map { try self.attributePath(item, $0) } ?? item
                return caseSensitive ? k : self.lowercasedIfString(k)
            })
        case "unique":
            let a = try bind(["case_sensitive", "attribute"])
            let caseSensitive = truthy(a["case_sensitive"] ?? .bool(false))
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            for item in try iterate(value) {
                var k = try a["attribute"].map { try attributePath(item, $0) } ?? item
                if !caseSensitive { k = lowercasedIfString(k) }
                if !seen.contains(where: { pyEqual($0, k) }) {
                    seen.append(k)
                    out.append(item)
                }
            }
            return generator(out)
        case "min", "max":
            let a = try bind(["case_sensitive", "attribute"])
            let caseSensitive = truthy(a["case_sensitive"] ?? .bool(false))
            var best: JinjaValue?
            var bestKey: JinjaValue = .none
            for item in try iterate(value) {
                var k = try a["attribute"].map { try attributePath(item, $0) } ?? item
                if !caseSensitive { k = lowercasedIfString(k) }
                if best == nil {
                    best = item; bestKey = k
                } else {
                    let c = try pyCompare(k, bestKey)
                    if (name == "min" && c < 0) || (name == "max" && c > 0) { best = item; bestKey = k }
                }
            }
            return best ?? .undefined
        case "sum":
            let a = try bind(["attribute", "start"])
            var total = a["start"] ?? .int(0)
            for item in try iterate(value) {
                total = try binaryOp("+", total, try a["attribute"].map { try attributePath(item, $0) } ?? item)
            }
            return total
        case "map":
            let items = truthy(value) ? try iterate(value) : []
            if let attr = kwargs.first(where: { $0.0 == "attribute" })?.1 {
                let def = kwargs.first(where: { $0.0 == "default" })?.1
                return generator(try items.map { item in
                    let v = try attributePath(item, attr)
                    if case .undefined = v, let def { return def }
                    return v
                })
            }
            guard let f = args.first else { throw TemplateError("map requires a filter name or attribute=") }
            let rest = Array(args.dropFirst())
            return generator(try items.map { try filter(str(f), $0, rest, kwargs) })
        case "select", "reject":
            let items = truthy(value) ? try iterate(value) : []
            let want = name == "select"
            return generator(try items.filter { item in
                if let t = args.first { return try applyTest(str(t), item, Array(args.dropFirst())) == want }
                return truthy(item) == want
            })
        case "selectattr", "rejectattr":
            let items = truthy(value) ? try iterate(value) : []
            guard let attr = args.first else { throw TemplateError("\(name) requires an attribute name") }
            let want = name == "selectattr"
            return generator(try items.filter { item in
                let v = try attributePath(item, attr)
                if args.count > 1 { return try applyTest(str(args[1]), v, Array(args.dropFirst(2))) == want }
                return truthy(v) == want
            })
        case "replace":
            let a = try bind(["old", "new", "count"])
            let count: Int? = a["count"].flatMap { if case .int(let n) = $0 { return n } else { return nil } }
            return .string(pyReplace(str(value), str(a["old"] ?? .string("")), str(a["new"] ?? .string("")), count: count))
        case "indent":
            let a = try bind(["width", "first", "blank"])
            var indention = "    "
            if let w = a["width"] {
                if case .string(let s) = w { indention = s } else { indention = String(repeating: " ", count: max(0, Int(number(w) ?? 4))) }
            }
            return .string(jinjaIndent(str(value), indention, first: truthy(a["first"] ?? .bool(false)),
                                       blank: truthy(a["blank"] ?? .bool(false))))
        case "int":
            let a = try bind(["default", "base"])
            let def = a["default"] ?? .int(0)
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite ? .int(Int(d)) : def
            case .string(let s):
                let t = pyStrip(s, chars: nil, left: true, right: true).replacingOccurrences(of: "_", with: "")
                let base = a["base"].flatMap { if case .int(let b) = $0 { return b } else { return nil } } ?? 10
                if let i = Int(t, radix: base) { return .int(i) }
                if let d = Double(t), d.isFinite { return .int(Int(d)) }
                return def
            default: return def
            }
        case "float":
            let a = try bind(["default"])
            let def = a["default"] ?? .double(0)
            switch value {
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return value
            case .string(let s): return Double(pyStrip(s, chars: nil, left: true, right: true)).map { .double($0) } ?? def
            default: return def
            }
        case "abs":
            switch value {
            case .int(let i): return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            default: throw typeError("bad operand type for abs(): '\(pyTypeName(value))'")
            }
        case "round":
            let a = try bind(["precision", "method"])
            let precision = a["precision"].flatMap { if case .int(let p) = $0 { return p } else { return nil } } ?? 0
            guard let x = number(value) else { throw typeError("round expects a number") }
            let p = pow(10.0, Double(precision))
            switch a["method"].map(str) ?? "common" {
            case "ceil": return .double((x * p).rounded(.up) / p)
            case "floor": return .double((x * p).rounded(.down) / p)
            default: return .double((x * p).rounded(.toNearestOrEven) / p)
            }
        case "wordcount":
            return .int(str(value).split(whereSeparator: { $0.isWhitespace || $0.isPunctuation }).count)
        case "center":
            let a = try bind(["width"])
            return .string(pyCenter(str(value), Int(number(a["width"] ?? .int(80)) ?? 80), " "))
        case "attr":
            guard let n = args.first else { throw TemplateError("attr requires a name") }
            return try getAttribute(value, str(n))
        case "format":
            return .string(try percentFormat(str(value), args))
        case "pprint":
            return .string(PyFormat.repr(value))
        case "batch":
            let a = try bind(["linecount", "fill_with"])
            let n = Int(number(a["linecount"] ?? .int(1)) ?? 1)
            guard n > 0 else { throw TemplateError("batch size must be positive") }
            var out: [JinjaValue] = []
            var cur: [JinjaValue] = []
            for item in try iterate(value) {
                cur.append(item)
                if cur.count == n { out.append(.array(cur)); cur = [] }
            }
            if !cur.isEmpty {
                if let fill = a["fill_with"] { while cur.count < n { cur.append(fill) } }
                out.append(.array(cur))
            }
            return generator(out)
        case "striptags":
            return .string(str(value).replacingOccurrences(of: "<[^>]*>", with: "", options: .regularExpression))
        default:
            throw TemplateError("TemplateRuntimeError: No filter named '\(name)' found.")
        }
    }

    func number(_ v: JinjaValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    func length(_ v: JinjaValue) throws -> Int {
        switch v.plain {
        case .undefined: return 0
        case .string(let s): return s.unicodeScalars.count
        case .array(let a): return a.count
        case .object(let o): return o.count
        case .opaque(let op):
            if case .namespace = op.kind { throw typeError("object of type 'Namespace' has no len()") }
            throw typeError("object of type '\(pyTypeName(v))' has no len()")
        default:
            throw typeError("object of type '\(pyTypeName(v))' has no len()")
        }
    }

    private func lowercasedIfString(_ v: JinjaValue) -> JinjaValue {
        if case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    /// Jinja's attribute getter for `attribute="a.b.0"` arguments: item lookup per dotted part.
    func attributePath(_ item: JinjaValue, _ attr: JinjaValue) throws -> JinjaValue {
        if case .int = attr { return try getItem(item, attr) }
        var v = item
        for part in str(attr).split(separator: ".", omittingEmptySubsequences: false) {
            if case .undefined = v { return .undefined }
            if let i = Int(part) { v = try getItem(v, .int(i)) } else { v = try getItem(v, .string(String(part))) }
        }
        return v
    }

    private func stableSort(_ items: [JinjaValue], reverse: Bool, key: (JinjaValue) throws -> JinjaValue) throws -> [JinjaValue] {
        let keys = try items.map(key)
        var idx = Array(items.indices)
        var failure: Error?
        // Insertion-based merge sort keeps equal elements in order (Python's sort is stable).
        func less(_ a: Int, _ b: Int) -> Bool {
            do {
                let c = try pyCompare(keys[a], keys[b])
                return reverse ? c > 0 : c < 0
            } catch {
                failure = error
                return false
            }
        }
        idx = mergeSort(idx, less)
        if let failure { throw failure }
        return idx.map { items[$0] }
    }

    private func mergeSort(_ a: [Int], _ less: (Int, Int) -> Bool) -> [Int] {
        if a.count <= 1 { return a }
        let mid = a.count / 2
        let l = mergeSort(Array(a[..<mid]), less), r = mergeSort(Array(a[mid...]), less)
        var out: [Int] = []
        out.reserveCapacity(a.count)
        var i = 0, j = 0
        while i < l.count && j < r.count {
            if less(r[j], l[i]) { out.append(r[j]); j += 1 } else { out.append(l[i]); i += 1 }
        }
        out += l[i...]
        out += r[j...]
        return out
    }

    // MARK: tests

    func applyTest(_ name: String, _ v: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        let v = v.plain, args = args.map(\.plain)
        func arg(_ i: Int) throws -> JinjaValue {
            guard i < args.count else { throw typeError("test '\(name)' is missing an argument") }
            return args[i]
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "mapping": if case .object = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "number":
            switch v {
            case .int, .double, .bool: return true
            default: return false
            }
        case "iterable":
            switch v {
            case .undefined, .string, .array, .object: return true
            case .opaque(let op): if case .generator = op.kind { return true } else { return false }
            default: return false
            }
        case "sequence":
            switch v {
            case .undefined, .string, .array, .object: return true
            default: return false
            }
        case "callable":
            if case .opaque(let op) = v {
                switch op.kind {
                case .macro, .builtin, .boundMethod, .unsafeMethod: return true
                default: return false
                }
            }
            return false
        case "equalto", "eq", "==", "sameas": return pyEqual(v, try arg(0))
        case "ne", "!=": return !pyEqual(v, try arg(0))
        case "lt", "lessthan", "<": return try pyCompare(v, try arg(0)) < 0
        case "le", "<=": return try pyCompare(v, try arg(0)) <= 0
        case "gt", "greaterthan", ">": return try pyCompare(v, try arg(0)) > 0
        case "ge", ">=": return try pyCompare(v, try arg(0)) >= 0
        case "in": return try contains(try arg(0), v)
        case "odd", "even":
            guard case .int(let i) = v else { throw typeError("test '\(name)' expects an integer") }
            return (abs(i) % 2 == 1) == (name == "odd")
        case "divisibleby":
            guard case .int(let i) = v, case .int(let d) = try arg(0), d != 0 else { throw typeError("divisibleby expects integers") }
            return i % d == 0
        case "lower": return str(v) == str(v).lowercased()
        case "upper": return str(v) == str(v).uppercased()
        case "escaped": return false
        case "filter":
            return ["tojson", "length", "count", "string", "safe", "trim", "upper", "lower", "capitalize", "title",
                    "default", "d", "join", "list", "first", "last", "reverse", "items", "dictsort", "sort", "unique",
                    "min", "max", "sum", "map", "select", "reject", "selectattr", "rejectattr", "replace", "indent",
                    "int", "float", "abs", "round", "wordcount", "center", "escape", "e", "attr", "format", "pprint",
                    "batch", "striptags"].contains(str(try arg(0)))
        case "test":
            return ["defined", "undefined", "none", "string", "mapping", "boolean", "true", "false", "integer",
                    "float", "number", "iterable", "sequence", "callable", "equalto", "eq", "ne", "lt", "le", "gt",
                    "ge", "in", "odd", "even", "divisibleby", "lower", "upper"].contains(str(try arg(0)))
        default:
            throw TemplateError("TemplateAssertionError: No test named '\(name)'.")
        }
    }
}
