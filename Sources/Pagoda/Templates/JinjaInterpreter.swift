import Foundation

/// A variable scope. Loop iterations and macro calls get a child scope; `if` does not.
final class Scope {
    var vars: [String: JinjaValue] = [:]
    let parent: Scope?

    init(parent: Scope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        var s: Scope? = self
        while let cur = s {
            if let v = cur.vars[name] { return v }
            s = cur.parent
        }
        return nil
    }
}

enum Flow { case normal, breakLoop, continueLoop }

/// A compiled template.
public struct JinjaTemplate: Sendable {
    let nodes: [Node]

    public init(_ source: String) throws {
        var lexer = JinjaLexer(source)
        let tokens = try lexer.tokenize()
        var parser = JinjaParser(tokens: tokens)
        nodes = try parser.parseTemplate()
    }

    public func render(_ context: [String: JinjaValue], now: Date = Date()) throws -> String {
        let interpreter = Interpreter(now: now)
        let globals = Scope(parent: nil)
        for name in Interpreter.builtinNames { globals.vars[name] = .opaque(JinjaOpaque(.builtin(name))) }
        let root = Scope(parent: globals)
        root.vars = context
        var out = ""
        _ = try interpreter.execute(nodes, root, &out)
        return out
    }
}

func undefinedError(_ what: String) -> TemplateError {
    TemplateError("UndefinedError: \(what)")
}

func typeError(_ what: String) -> TemplateError {
    TemplateError("TypeError: \(what)")
}

func pyTypeName(_ v: JinjaValue) -> String {
    switch v {
    case .undefined: return "Undefined"
    case .none: return "NoneType"
    case .bool: return "bool"
    case .int: return "int"
    case .double: return "float"
    case .string: return "str"
    case .array: return "list"
    case .object: return "dict"
    case .opaque(let o):
        switch o.kind {
        case .namespace: return "Namespace"
        case .macro: return "Macro"
        case .builtin: return "function"
        case .generator: return "generator"
        case .loop: return "LoopContext"
        case .boundMethod, .unsafeMethod: return "builtin_function_or_method"
        case .markup: return "Markup"
        case .tuple: return "tuple"
        }
    }
}

final class Interpreter {
    let now: Date
    static let builtinNames = ["range", "namespace", "raise_exception", "strftime_now", "dict"]

    init(now: Date) { self.now = now }

    // MARK: statements

    func execute(_ nodes: [Node], _ scope: Scope, _ out: inout String) throws -> Flow {
        for node in nodes {
            let flow: Flow
            do {
                flow = try execute(node, scope, &out)
            } catch var e as TemplateError {
                if e.line == nil, let line = node.line { e.line = line }
                throw e
            }
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func execute(_ node: Node, _ scope: Scope, _ out: inout String) throws -> Flow {
        switch node {
        case .text(let s):
            out += s
        case .output(let e, _):
            out += PyFormat.str(try eval(e, scope))
        case .ifChain(let branches, let elseBody, _):
            for (cond, body) in branches where truthy(try eval(cond, scope)) {
                return try execute(body, scope, &out)
            }
            return try execute(elseBody, scope, &out)
        case .forLoop(let loop, _):
            return try executeFor(loop, scope, &out)
        case .set(let target, let e, _):
            try assign(target, try eval(e, scope), scope)
        case .setBlock(let target, let filters, let body, _):
            var buf = ""
            _ = try execute(body, scope, &buf)
            var v = JinjaValue.string(buf)
            for f in filters { v = try applyFilter(f.name, v, f.arguments, scope) }
            try assign(target, v, scope)
        case .macro(let def, _):
            scope.vars[def.name] = .opaque(JinjaOpaque(.macro(MacroValue(definition: def, closure: scope, caller: nil))))
        case .callBlock(let call, let params, let body, _):
            guard case .call(let calleeExpr, let args) = call else { return .normal }
            let callee = try eval(calleeExpr, scope)
            let caller = JinjaValue.opaque(JinjaOpaque(.macro(MacroValue(
                definition: MacroDefinition(name: "caller", parameters: params, body: body), closure: scope, caller: nil))))
            let (pos, kw) = try evalArguments(args, scope)
            guard case .opaque(let op) = callee, case .macro(let m) = op.kind else {
                throw typeError("call block target is not a macro")
            }
            out += PyFormat.str(try callMacro(m, pos, kw, caller: caller))
        case .filterBlock(let filters, let body, _):
            var buf = ""
            let flow = try execute(body, scope, &buf)
            var v = JinjaValue.string(buf)
            for f in filters { v = try applyFilter(f.name, v, f.arguments, scope) }
            out += PyFormat.str(v)
            return flow
        case .with(let assigns, let body, _):
            let inner = Scope(parent: scope)
            for (t, e) in assigns { try assign(t, try eval(e, scope), inner) }
            return try execute(body, inner, &out)
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        case .expression(let e, _):
            _ = try eval(e, scope)
        }
        return .normal
    }

    private func executeFor(_ loop: ForLoop, _ scope: Scope, _ out: inout String) throws -> Flow {
        if loop.recursive { throw TemplateError("recursive for loops are not supported") }
        var items = try iterate(try eval(loop.iterable, scope))
        if let cond = loop.condition {
            var kept: [JinjaValue] = []
            for item in items {
                let s = Scope(parent: scope)
                try assign(loop.target, item, s)
                if truthy(try eval(cond, s)) { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            return try execute(loop.elseBody, Scope(parent: scope), &out)
        }
        for index in items.indices {
            let s = Scope(parent: scope)
            try assign(loop.target, items[index], s)
            s.vars["loop"] = .opaque(JinjaOpaque(.loop(LoopState(items: items, index0: index, depth0: 0))))
            let flow = try execute(loop.body, s, &out)
            if flow == .breakLoop { break }
        }
        return .normal
    }

    func assign(_ target: AssignTarget, _ value: JinjaValue, _ scope: Scope) throws {
        switch target {
        case .name(let n):
            scope.vars[n] = value
        case .tuple(let targets):
            let values = try iterate(value)
            if values.count != targets.count {
                throw TemplateError(values.count < targets.count
                    ? "ValueError: not enough values to unpack (expected \(targets.count), got \(values.count))"
                    : "ValueError: too many values to unpack (expected \(targets.count))")
            }
            for (t, v) in zip(targets, values) { try assign(t, v, scope) }
        case .attribute(let name, let attr):
            guard case .opaque(let op)? = scope.lookup(name), case .namespace = op.kind else {
                throw TemplateError("cannot assign attribute on non-namespace object")
            }
            op.attributes[attr] = value
        }
    }

    // MARK: expressions

    func eval(_ e: Expr, _ scope: Scope) throws -> JinjaValue {
        switch e {
        case .literal(let v):
            return v
        case .name(let n):
            return scope.lookup(n) ?? .undefined
        case .list(let items):
            return .array(try items.map { try eval($0, scope) })
        case .tuple(let items):
            return .tuple(try items.map { try eval($0, scope) })
        case .dict(let pairs):
            var o = JinjaObject()
            for (k, v) in pairs {
                let key = try eval(k, scope)
                guard JinjaObject.key(key) != nil else { throw typeError("unhashable dict key of type '\(pyTypeName(key))'") }
                o[value: key] = try eval(v, scope)
            }
            return .object(o)
        case .attribute(let base, let name):
            let b = try eval(base, scope)
            if case .undefined = b { throw undefinedError("\(describe(base)) is undefined (accessing attribute '\(name)')") }
            return try getAttribute(b, name)
        case .item(let base, let key):
            let b = try eval(base, scope)
            if case .undefined = b { throw undefinedError("\(describe(base)) is undefined (accessing an item)") }
            return try getItem(b, try eval(key, scope))
        case .slice(let base, let start, let stop, let step):
            let b = try eval(base, scope)
            return try slice(b, try start.map { try eval($0, scope) }, try stop.map { try eval($0, scope) },
                             try step.map { try eval($0, scope) })
        case .call(let calleeExpr, let args):
            let callee = try eval(calleeExpr, scope)
            let (pos, kw) = try evalArguments(args, scope)
            if case .undefined = callee { throw undefinedError("\(describe(calleeExpr)) is undefined and cannot be called") }
            return try call(callee, pos, kw)
        case .filter(let base, let name, let args):
            return try applyFilter(name, try eval(base, scope), args, scope)
        case .test(let base, let name, let args):
            let v = try eval(base, scope)
            let (pos, _) = try evalArguments(args, scope)
            return .bool(try applyTest(name, v, pos))
        case .not(let x):
            return .bool(!truthy(try eval(x, scope)))
        case .negate(let x):
            let v = try eval(x, scope)
            switch v {
            case .int(let i): return .int(-i)
            case .bool(let b): return .int(b ? -1 : 0)
            case .double(let d): return .double(-d)
            case .undefined: throw undefinedError("\(describe(x)) is undefined")
            default: throw typeError("bad operand type for unary -: '\(pyTypeName(v))'")
            }
        case .plus(let x):
            let v = try eval(x, scope)
            switch v {
            case .int, .double: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .undefined: throw undefinedError("\(describe(x)) is undefined")
            default: throw typeError("bad operand type for unary +: '\(pyTypeName(v))'")
            }
        case .and(let a, let b):
            let l = try eval(a, scope)
            return truthy(l) ? try eval(b, scope) : l
        case .or(let a, let b):
            let l = try eval(a, scope)
            return truthy(l) ? l : try eval(b, scope)
        case .binary(let op, let a, let b):
            let l = try eval(a, scope)
            let r = try eval(b, scope)
            if op == "~" { return .string(PyFormat.str(l) + PyFormat.str(r)) }
            if op == "+" && (l.isMarkup || r.isMarkup), let ls = l.stringValue, let rs = r.stringValue {
                // Markup.__add__/__radd__ escape the plain operand.
                let a = l.isMarkup ? ls : htmlEscape(ls), b = r.isMarkup ? rs : htmlEscape(rs)
                return .opaque(JinjaOpaque(.markup(a + b)))
            }
            if case .undefined = l { throw undefinedError("\(describe(a)) is undefined") }
            if case .undefined = r { throw undefinedError("\(describe(b)) is undefined") }
            if op == "%", case .string(let fmt) = l.plain {
                if case .tuple = b, case .array(let items) = r.plain { return .string(try percentFormat(fmt, items)) }
                return .string(try percentFormat(fmt, [r]))
            }
            return try binaryOp(op, l, r)
        case .compare(let first, let ops):
            var left = try eval(first, scope)
            for (op, rhsExpr) in ops {
                let right = try eval(rhsExpr, scope)
                if !(try compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let then, let cond, let otherwise):
            if truthy(try eval(cond, scope)) { return try eval(then, scope) }
            return try otherwise.map { try eval($0, scope) } ?? .undefined
        }
    }

    /// A short source-like description of an expression for error messages.
    func describe(_ e: Expr) -> String {
        switch e {
        case .name(let n): return "'\(n)'"
        case .attribute(let b, let n): return "\(describe(b)).\(n)"
        case .item(let b, _): return "\(describe(b))[...]"
        case .call(let b, _): return "\(describe(b))(...)"
        case .filter(let b, let n, _): return "\(describe(b))|\(n)"
        default: return "value"
        }
    }

    func evalArguments(_ args: [Argument], _ scope: Scope) throws -> ([JinjaValue], [(String, JinjaValue)]) {
        var pos: [JinjaValue] = []
        var kw: [(String, JinjaValue)] = []
        for a in args {
            let v = try eval(a.value, scope)
            if let n = a.name { kw.append((n, v)) } else { pos.append(v) }
        }
        return (pos, kw)
    }

    func keyString(_ v: JinjaValue) -> String {
        if case .string(let s) = v { return s }
        return PyFormat.repr(v)
    }

    // MARK: attribute and item access

    static let dictMethods: Set<String> = ["get", "items", "keys", "values", "copy"]
    static let dictUnsafe: Set<String> = ["update", "pop", "popitem", "clear", "setdefault"]
    static let listMethods: Set<String> = ["index", "count", "copy"]
    static let listUnsafe: Set<String> = ["append", "pop", "extend", "insert", "remove", "sort", "reverse", "clear"]
    static let stringMethods: Set<String> = [
        "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
        "capitalize", "swapcase", "replace", "find", "rfind", "index", "rindex", "count", "join", "format",
        "splitlines", "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric",
        "isdecimal", "istitle", "zfill", "center", "ljust", "rjust", "partition", "rpartition",
        "removeprefix", "removesuffix", "casefold", "expandtabs",
    ]

    /// `obj.name`: Python attribute first, then item (Jinja's `getattr`).
    func getAttribute(_ v: JinjaValue, _ name: String) throws -> JinjaValue {
        let v = v.plain
        switch v {
        case .undefined:
            throw undefinedError("attribute '\(name)' of an undefined value")
        case .object(let o):
            if Self.dictMethods.contains(name) { return .opaque(JinjaOpaque(.boundMethod(v, name))) }
            if Self.dictUnsafe.contains(name) { return .opaque(JinjaOpaque(.unsafeMethod("dict", name))) }
            return o[name] ?? .undefined
        case .string:
            if Self.stringMethods.contains(name) { return .opaque(JinjaOpaque(.boundMethod(v, name))) }
            return .undefined
        case .array:
            if Self.listMethods.contains(name) { return .opaque(JinjaOpaque(.boundMethod(v, name))) }
            if Self.listUnsafe.contains(name) { return .opaque(JinjaOpaque(.unsafeMethod("list", name))) }
            return .undefined
        case .opaque(let op):
            switch op.kind {
            case .namespace: return op.attributes[name] ?? .undefined
            case .loop(let state): return loopAttribute(state, name, v)
            default: return .undefined
            }
        default:
            return .undefined
        }
    }

    /// `obj[key]`: item first, then attribute for string keys (Jinja's `getitem`).
    func getItem(_ v: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        let v = v.plain, key = key.plain
        switch v {
        case .undefined:
            throw undefinedError("item of an undefined value")
        case .object(let o):
            if case .string(let k) = key {
                if let x = o[k] { return x }
                return try getAttribute(v, k)
            }
            return o[value: key] ?? .undefined
        case .array(let a):
            if let i = intIndex(key) {
                let j = i < 0 ? i + a.count : i
                return (j >= 0 && j < a.count) ? a[j] : .undefined
            }
            if case .string(let k) = key { return try getAttribute(v, k) }
            return .undefined
        case .string(let s):
            if let i = intIndex(key) {
                let u = Array(s.unicodeScalars)
                let j = i < 0 ? i + u.count : i
                return (j >= 0 && j < u.count) ? .string(String(Character(u[j]))) : .undefined
            }
            if case .string(let k) = key { return try getAttribute(v, k) }
            return .undefined
        case .opaque:
            if case .string(let k) = key { return try getAttribute(v, k) }
            return .undefined
        default:
            return .undefined
        }
    }

    private func intIndex(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    private func loopAttribute(_ st: LoopState, _ name: String, _ loopValue: JinjaValue) -> JinjaValue {
        let n = st.items.count
        switch name {
        case "index": return .int(st.index0 + 1)
        case "index0": return .int(st.index0)
        case "revindex": return .int(n - st.index0)
        case "revindex0": return .int(n - st.index0 - 1)
        case "first": return .bool(st.index0 == 0)
        case "last": return .bool(st.index0 == n - 1)
        case "length": return .int(n)
        case "depth": return .int(st.depth0 + 1)
        case "depth0": return .int(st.depth0)
        case "previtem": return st.index0 > 0 ? st.items[st.index0 - 1] : .undefined
        case "nextitem": return st.index0 + 1 < n ? st.items[st.index0 + 1] : .undefined
        case "cycle": return .opaque(JinjaOpaque(.boundMethod(loopValue, "cycle")))
        default: return .undefined
        }
    }

    func slice(_ v: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        func opt(_ x: JinjaValue?) throws -> Int? {
            guard let x else { return nil }
            switch x {
            case .none, .undefined: return nil
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            default: throw typeError("slice indices must be integers or None")
            }
        }
        let st = try opt(step) ?? 1
        if st == 0 { throw TemplateError("ValueError: slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            var lo: Int, hi: Int
            if st > 0 {
                lo = try opt(start).map { $0 < 0 ? max($0 + count, 0) : min($0, count) } ?? 0
                hi = try opt(stop).map { $0 < 0 ? max($0 + count, 0) : min($0, count) } ?? count
                return lo < hi ? Array(stride(from: lo, to: hi, by: st)) : []
            } else {
                lo = try opt(start).map { $0 < 0 ? max($0 + count, -1) : min($0, count - 1) } ?? count - 1
                hi = try opt(stop).map { $0 < 0 ? max($0 + count, -1) : min($0, count - 1) } ?? -1
                return lo > hi ? Array(stride(from: lo, to: hi, by: st)) : []
            }
        }
        switch v.plain {
        case .array(let a):
            return .array(try indices(a.count).map { a[$0] })
        case .string(let s):
            let u = Array(s.unicodeScalars)
            var r = String.UnicodeScalarView()
            for i in try indices(u.count) { r.append(u[i]) }
            return .string(String(r))
        case .undefined:
            throw undefinedError("slice of an undefined value")
        default:
            throw typeError("'\(pyTypeName(v))' object is not subscriptable")
        }
    }

    // MARK: calls

    func call(_ callee: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        guard case .opaque(let op) = callee else { throw typeError("'\(pyTypeName(callee))' object is not callable") }
        switch op.kind {
        case .macro(let m):
            return try callMacro(m, args, kwargs, caller: nil)
        case .builtin(let name):
            return try callBuiltin(name, args, kwargs)
        case .boundMethod(let receiver, let name):
            return try callMethod(receiver, name, args, kwargs)
        case .unsafeMethod(let type, let name):
            throw TemplateError("SecurityError: access to attribute '\(name)' of '\(type)' object is unsafe.")
        default:
            throw typeError("'\(pyTypeName(callee))' object is not callable")
        }
    }

    func callMacro(_ m: MacroValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], caller: JinjaValue?) throws -> JinjaValue {
        let s = Scope(parent: m.closure)
        let def = m.definition
        var kw = JinjaObject(kwargs)
        for (i, (name, defaultExpr)) in def.parameters.enumerated() {
            if i < args.count {
                s.vars[name] = args[i]
            } else if let v = kw[name] {
                s.vars[name] = v
                kw[name] = nil
            } else if let d = defaultExpr {
                s.vars[name] = try eval(d, s)
            } else {
                s.vars[name] = .undefined
            }
        }
        s.vars["varargs"] = .tuple(args.count > def.parameters.count ? Array(args[def.parameters.count...]) : [])
        s.vars["kwargs"] = .object(kw)
        if let caller { s.vars["caller"] = caller }
        var buf = ""
        _ = try execute(def.body, s, &buf)
        return .string(buf)
    }

    // MARK: truthiness, comparison, arithmetic

    func truthy(_ v: JinjaValue) -> Bool {
        switch v {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        case .opaque(let o):
            switch o.kind {
            case .markup(let s): return !s.isEmpty
            case .tuple(let items): return !items.isEmpty
            default: return true
            }
        }
    }

    func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        switch v.plain {
        case .undefined: return []
        case .array(let a): return a
        case .object(let o): return o.keyValues
        case .string(let s): return s.unicodeScalars.map { .string(String(Character($0))) }
        case .opaque(let op):
            if case .generator(let items) = op.kind { return items }
            if case .namespace = op.kind { throw typeError("'Namespace' object is not iterable") }
            throw typeError("'\(pyTypeName(v))' object is not iterable")
        default:
            throw typeError("'\(pyTypeName(v))' object is not iterable")
        }
    }

    private func integer(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    func pyEqual(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        if isTuple(a) != isTuple(b), case .array = a.plain, case .array = b.plain { return false }  // (1,) != [1]
        let a = a.plain, b = b.plain
        if let x = integer(a), let y = integer(b) { return x == y }
        if let x = number(a), let y = number(b) { return x == y }
        switch (a, b) {
        case let (.array(x), .array(y)):
            return x.count == y.count && zip(x, y).allSatisfy { pyEqual($0, $1) }
        case let (.object(x), .object(y)):
            guard x.count == y.count else { return false }
            for (k, v) in x.pairs {
                guard let w = y[k], pyEqual(v, w) else { return false }
            }
            return true
        default:
            return a == b
        }
    }

    private func isTuple(_ v: JinjaValue) -> Bool {
        if case .opaque(let o) = v, case .tuple = o.kind { return true }
        return false
    }

    /// Python ordering; throws TypeError for unorderable types.
    func pyCompare(_ a: JinjaValue, _ b: JinjaValue) throws -> Int {
        let a = a.plain, b = b.plain
        if let x = integer(a), let y = integer(b) { return x < y ? -1 : (x > y ? 1 : 0) }
        if let x = number(a), let y = number(b) { return x < y ? -1 : (x > y ? 1 : 0) }
        switch (a, b) {
        case let (.string(x), .string(y)):
            let xs = x.unicodeScalars.map(\.value), ys = y.unicodeScalars.map(\.value)
            if xs == ys { return 0 }
            return xs.lexicographicallyPrecedes(ys) ? -1 : 1
        case let (.array(x), .array(y)):
            for (p, q) in zip(x, y) where !pyEqual(p, q) { return try pyCompare(p, q) }
            return x.count < y.count ? -1 : (x.count > y.count ? 1 : 0)
        case (.undefined, _), (_, .undefined):
            throw undefinedError("cannot compare an undefined value")
        default:
            throw typeError("'<' not supported between instances of '\(pyTypeName(a))' and '\(pyTypeName(b))'")
        }
    }

    func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        let container = container.plain, item = item.plain
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else {
                throw typeError("'in <string>' requires string as left operand, not \(pyTypeName(item))")
            }
            return sub.isEmpty || s.contains(sub)
        case .array(let a):
            return a.contains { pyEqual($0, item) }
        case .object(let o):
            return o[value: item] != nil
        case .undefined:
            return false
        case .opaque(let op):
            if case .generator(let a) = op.kind { return a.contains { pyEqual($0, item) } }
            throw typeError("argument of type '\(pyTypeName(container))' is not iterable")
        default:
            throw typeError("argument of type '\(pyTypeName(container))' is not iterable")
        }
    }

    func compare(_ op: String, _ l: JinjaValue, _ r: JinjaValue) throws -> Bool {
        switch op {
        case "==": return pyEqual(l, r)
        case "!=": return !pyEqual(l, r)
        case "<": return try pyCompare(l, r) < 0
        case "<=": return try pyCompare(l, r) <= 0
        case ">": return try pyCompare(l, r) > 0
        case ">=": return try pyCompare(l, r) >= 0
        case "in": return try contains(r, l)
        case "notin": return !(try contains(r, l))
        default: throw TemplateError("unknown comparison \(op)")
        }
    }

    func binaryOp(_ op: String, _ l: JinjaValue, _ r: JinjaValue) throws -> JinjaValue {
        let l = l.plain, r = r.plain
        let unsupported = typeError("unsupported operand type(s) for \(op): '\(pyTypeName(l))' and '\(pyTypeName(r))'")
        if let x = integer(l), let y = integer(r) {
            switch op {
            case "+":
                let (v, o) = x.addingReportingOverflow(y)
                return o ? .double(Double(x) + Double(y)) : .int(v)
            case "-":
                let (v, o) = x.subtractingReportingOverflow(y)
                return o ? .double(Double(x) - Double(y)) : .int(v)
            case "*":
                let (v, o) = x.multipliedReportingOverflow(by: y)
                return o ? .double(Double(x) * Double(y)) : .int(v)
            case "/":
                if y == 0 { throw TemplateError("ZeroDivisionError: division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                if y == 0 { throw TemplateError("ZeroDivisionError: integer division or modulo by zero") }
                let q = x / y
                return .int((x % y != 0 && ((x < 0) != (y < 0))) ? q - 1 : q)
            case "%":
                if y == 0 { throw TemplateError("ZeroDivisionError: integer division or modulo by zero") }
                let m = x % y
                return .int((m != 0 && ((m < 0) != (y < 0))) ? m + y : m)
            case "**":
                if y >= 0 {
                    var result = 1
                    for _ in 0..<y {
                        let (v, o) = result.multipliedReportingOverflow(by: x)
                        if o { return .double(pow(Double(x), Double(y))) }
                        result = v
                    }
                    return .int(result)
                }
                return .double(pow(Double(x), Double(y)))
            default: break
            }
        }
        if let x = number(l), let y = number(r) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                if y == 0 { throw TemplateError("ZeroDivisionError: float division by zero") }
                return .double(x / y)
            case "//":
                if y == 0 { throw TemplateError("ZeroDivisionError: float floor division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                if y == 0 { throw TemplateError("ZeroDivisionError: float modulo") }
                var m = fmod(x, y)
                if m != 0 && ((m < 0) != (y < 0)) { m += y }
                return .double(m)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        switch (op, l, r) {
        case let ("+", .string(a), .string(b)): return .string(a + b)
        case let ("+", .array(a), .array(b)): return .array(a + b)
        case let ("*", .string(a), _) where integer(r) != nil:
            return .string(String(repeating: a, count: max(0, integer(r)!)))
        case let ("*", _, .string(b)) where integer(l) != nil:
            return .string(String(repeating: b, count: max(0, integer(l)!)))
        case let ("*", .array(a), _) where integer(r) != nil:
            return .array(Array([[JinjaValue]](repeating: a, count: max(0, integer(r)!)).joined()))
        case ("+", .string, _):
            throw typeError("can only concatenate str (not \"\(pyTypeName(r))\") to str")
        case ("+", .array, _):
            throw typeError("can only concatenate list (not \"\(pyTypeName(r))\") to list")
        default:
            throw unsupported
        }
    }
}

extension Node {
    var line: Int? {
        switch self {
        case .text: return nil
        case .output(_, let l), .ifChain(_, _, let l), .forLoop(_, let l), .set(_, _, let l),
             .setBlock(_, _, _, let l), .macro(_, let l), .callBlock(_, _, _, let l), .filterBlock(_, _, let l),
             .with(_, _, let l), .breakLoop(let l), .continueLoop(let l), .expression(_, let l):
            return l
        }
    }
}
