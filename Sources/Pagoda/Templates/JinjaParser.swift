// Recursive-descent parser following Jinja2's grammar and operator precedence.

struct JinjaParser {
    private var tokens: [Token]
    private var i = 0

    init(tokens: [Token]) { self.tokens = tokens }

    // MARK: helpers

    private var current: Token { tokens[i] }
    private var next: Token { i + 1 < tokens.count ? tokens[i + 1] : tokens[tokens.count - 1] }

    private mutating func advance() { if i < tokens.count - 1 { i += 1 } }

    private func error(_ msg: String, _ t: Token? = nil) -> TemplateError {
        let t = t ?? current
        return TemplateError(msg, kind: .syntax, line: t.line, column: t.column)
    }

    private func describe(_ k: JinjaTokenKind) -> String {
        switch k {
        case .text: return "template text"
        case .varBegin: return "'{{'"
        case .varEnd: return "end of print statement '}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block '%}'"
        case .name(let n): return "'\(n)'"
        case .string(let s): return "string '\(s)'"
        case .int(let n): return "integer \(n)"
        case .float(let d): return "float \(d)"
        case .op(let o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }

    private func isOp(_ o: String) -> Bool { current.kind == .op(o) }
    private func isName(_ n: String) -> Bool { current.kind == .name(n) }

    private mutating func skipOp(_ o: String) -> Bool {
        if isOp(o) { advance(); return true }
        return false
    }

    private mutating func skipName(_ n: String) -> Bool {
        if isName(n) { advance(); return true }
        return false
    }

    private mutating func expectOp(_ o: String) throws {
        guard skipOp(o) else { throw error("expected '\(o)', got \(describe(current.kind))") }
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else { throw error("expected a name, got \(describe(current.kind))") }
        advance()
        return n
    }

    private mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else { throw error("expected end of statement block '%}', got \(describe(current.kind))") }
        advance()
    }

    // MARK: template structure

    mutating func parseTemplate() throws -> [Node] {
        let (nodes, end) = try parseBody(until: [], opener: nil)
        if let end { throw error("unexpected '\(end)'") }
        return nodes
    }

    /// Parses nodes until a block tag whose name is in `until`; leaves the parser on that name token.
    private mutating func parseBody(until: Set<String>, opener: Token?) throws -> ([Node], String?) {
        var nodes: [Node] = []
        while true {
            let t = current
            switch t.kind {
            case .eof:
                if until.isEmpty { return (nodes, nil) }
                let closing = until.first { $0.hasPrefix("end") } ?? until.sorted()[0]
                let block = String(closing.dropFirst(3))
                let where_ = opener.map { " opened at line \($0.line)" } ?? ""
                throw error("unclosed '\(block)' block\(where_): reached the end of the template "
                    + "without finding {% \(closing) %}", opener ?? t)
            case .text(let s):
                nodes.append(.text(s))
                advance()
            case .varBegin:
                advance()
                let e = try parseTuple()
                guard current.kind == .varEnd else {
                    throw error("expected end of print statement '}}', got \(describe(current.kind))")
                }
                advance()
                nodes.append(.output(e, line: t.line))
            case .blockBegin:
                advance()
                guard case .name(let tag) = current.kind else { throw error("expected a statement name after '{%'") }
                if until.contains(tag) { return (nodes, tag) }
                if let n = try parseStatement(tag, opener: t) { nodes.append(n) }
            default:
                throw error("unexpected \(describe(t.kind))")
            }
        }
    }

    private mutating func parseStatement(_ tag: String, opener: Token) throws -> Node? {
        let line = opener.line
        advance()  // the tag name
        switch tag {
        case "if":
            var branches: [(Expr, [Node])] = []
            var cond = try parseTuple(withCondexpr: false)
            var elseBody: [Node] = []
            while true {
                try expectBlockEnd()
                let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: opener)
                branches.append((cond, body))
                advance()
                if end == "elif" {
                    cond = try parseTuple(withCondexpr: false)
                    continue
                }
                if end == "else" {
                    try expectBlockEnd()
                    let (eb, _) = try parseBody(until: ["endif"], opener: opener)
                    elseBody = eb
                    advance()
                }
                break
            }
            try expectBlockEnd()
            return .ifChain(branches, elseBody: elseBody, line: line)
        case "for":
            let target = try parseAssignTarget(extraEnd: "in")
            guard skipName("in") else { throw error("expected 'in' in for loop") }
            let iter = try parseTuple(withCondexpr: false, extraEnd: "recursive")
            var condition: Expr?
            if skipName("if") { condition = try parseExpression() }
            let recursive = skipName("recursive")
            try expectBlockEnd()
            let (body, end) = try parseBody(until: ["endfor", "else"], opener: opener)
            advance()
            var elseBody: [Node] = []
            if end == "else" {
                try expectBlockEnd()
                let (eb, _) = try parseBody(until: ["endfor"], opener: opener)
                elseBody = eb
                advance()
            }
            try expectBlockEnd()
            return .forLoop(ForLoop(target: target, iterable: iter, condition: condition, body: body,
                                    elseBody: elseBody, recursive: recursive), line: line)
        case "set":
            let target = try parseAssignTarget(withNamespace: true)
            if skipOp("=") {
                let e = try parseTuple()
                try expectBlockEnd()
                return .set(target, e, line: line)
            }
            let filters = skipOp("|") ? try parseFilterChain() : []
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endset"], opener: opener)
            advance()
            try expectBlockEnd()
            return .setBlock(target, filters, body, line: line)
        case "macro":
            let name = try expectName()
            let params = try parseSignature()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endmacro"], opener: opener)
            advance()
            if case .name = current.kind { advance() }  // {% endmacro name %}
            try expectBlockEnd()
            return .macro(MacroDefinition(name: name, parameters: params, body: body), line: line)
        case "call":
            var params: [(String, Expr?)] = []
            if isOp("(") { params = try parseSignature() }
            let call = try parseExpression()
            guard case .call = call else { throw error("expected a call expression in call block") }
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endcall"], opener: opener)
            advance()
            try expectBlockEnd()
            return .callBlock(call, parameters: params, body: body, line: line)
        case "filter":
            let filters = try parseFilterChain()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endfilter"], opener: opener)
            advance()
            try expectBlockEnd()
            return .filterBlock(filters, body, line: line)
        case "with":
            var assigns: [(AssignTarget, Expr)] = []
            while current.kind != .blockEnd {
                if !assigns.isEmpty { try expectOp(",") }
                let t = try parseAssignTarget()
                try expectOp("=")
                assigns.append((t, try parseExpression()))
            }
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endwith"], opener: opener)
            advance()
            try expectBlockEnd()
            return .with(assigns, body, line: line)
        case "generation":
            // Transformers' AssistantTracker extension: renders its body unchanged.
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"], opener: opener)
            advance()
            try expectBlockEnd()
            return .with([], body, line: line)
        case "break":
            try expectBlockEnd()
            return .breakLoop(line: line)
        case "continue":
            try expectBlockEnd()
            return .continueLoop(line: line)
        default:
            if tag.hasPrefix("end") || tag == "elif" || tag == "else" {
                throw error("unexpected {% \(tag) %}: no open block expects it here", opener)
            }
            throw error("encountered unknown tag '\(tag)'", opener)
        }
    }

    private mutating func parseSignature() throws -> [(String, Expr?)] {
        try expectOp("(")
        var params: [(String, Expr?)] = []
        while !isOp(")") {
            if !params.isEmpty { try expectOp(",") }
            if isOp(")") { break }
            let n = try expectName()
            var def: Expr?
            if skipOp("=") { def = try parseExpression() }
            params.append((n, def))
        }
        try expectOp(")")
        return params
    }

    private mutating func parseFilterChain() throws -> [FilterCall] {
        var filters: [FilterCall] = []
        repeat {
            let line = current.line
            let name = try parseDottedName()
            var args: [Argument] = []
            if isOp("(") { args = try parseCallArguments() }
            filters.append(FilterCall(name: name, arguments: args, line: line))
        } while skipOp("|")
        return filters
    }

    private mutating func parseAssignTarget(extraEnd: String? = nil, withNamespace: Bool = false) throws -> AssignTarget {
        if withNamespace, case .name(let n) = current.kind, next.kind == .op(".") {
            advance(); advance()
            let attr = try expectName()
            return .attribute(n, attr)
        }
        var targets: [AssignTarget] = []
        var isTuple = false
        let paren = skipOp("(")
        while true {
            if !targets.isEmpty {
                guard skipOp(",") else { break }
                isTuple = true
            }
            if paren && isOp(")") { break }
            if let extraEnd, isName(extraEnd) { break }
            if current.kind == .blockEnd || isOp("=") { break }
            targets.append(.name(try expectName()))
        }
        if paren { try expectOp(")"); isTuple = true }
        guard !targets.isEmpty else { throw error("expected an assignment target") }
        return (isTuple || targets.count > 1) ? .tuple(targets) : targets[0]
    }

    // MARK: expressions

    mutating func parseExpression(withCondexpr: Bool = true) throws -> Expr {
        withCondexpr ? try parseCondexpr() : try parseOr()
    }

    private func isTupleEnd(_ extraEnd: String?) -> Bool {
        switch current.kind {
        case .varEnd, .blockEnd, .eof: return true
        case .op(")"): return true
        case .name(let n): return n == extraEnd
        default: return false
        }
    }

    mutating func parseTuple(withCondexpr: Bool = true, extraEnd: String? = nil, explicitParens: Bool = false) throws -> Expr {
        var items: [Expr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnd) { break }
            items.append(try parseExpression(withCondexpr: withCondexpr))
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let first = items.first { return first }
            if !explicitParens { throw error("expected an expression, got \(describe(current.kind))") }
        }
        return .tuple(items)
    }

    private mutating func parseCondexpr() throws -> Expr {
        var e = try parseOr()
        while skipName("if") {
            let cond = try parseOr()
            var otherwise: Expr?
            if skipName("else") { otherwise = try parseCondexpr() }
            e = .conditional(e, cond, otherwise)
        }
        return e
    }

    private mutating func parseOr() throws -> Expr {
        var e = try parseAnd()
        while skipName("or") { e = .or(e, try parseAnd()) }
        return e
    }

    private mutating func parseAnd() throws -> Expr {
        var e = try parseNot()
        while skipName("and") { e = .and(e, try parseNot()) }
        return e
    }

    private mutating func parseNot() throws -> Expr {
        if skipName("not") { return .not(try parseNot()) }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expr {
        let left = try parseMath1()
        var ops: [(String, Expr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                advance()
                ops.append((o, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if isName("not") && next.kind == .name("in") {
                advance(); advance()
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : .compare(left, ops)
    }

    private mutating func parseMath1() throws -> Expr {
        var e = try parseConcat()
        while case .op(let o) = current.kind, o == "+" || o == "-" {
            advance()
            e = .binary(o, e, try parseConcat())
        }
        return e
    }

    private mutating func parseConcat() throws -> Expr {
        var e = try parseMath2()
        while skipOp("~") { e = .binary("~", e, try parseMath2()) }
        return e
    }

    private mutating func parseMath2() throws -> Expr {
        var e = try parsePow()
        while case .op(let o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            advance()
            e = .binary(o, e, try parsePow())
        }
        return e
    }

    private mutating func parsePow() throws -> Expr {
        var e = try parseUnary()
        while skipOp("**") { e = .binary("**", e, try parseUnary()) }
        return e
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> Expr {
        var e: Expr
        if skipOp("-") {
            e = .negate(try parseUnary(withFilter: false))
        } else if skipOp("+") {
            e = .plus(try parseUnary(withFilter: false))
        } else {
            e = try parsePrimary()
        }
        e = try parsePostfix(e)
        if withFilter { e = try parseFilterExpr(e) }
        return e
    }

    private mutating func parsePrimary() throws -> Expr {
        let t = current
        switch t.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .string(var s):
            advance()
            while case .string(let more) = current.kind { s += more; advance() }
            return .literal(.string(s))
        case .int(let n):
            advance()
            return .literal(.int(n))
        case .float(let d):
            advance()
            return .literal(.double(d))
        case .op("("):
            advance()
            let e = try parseTuple(explicitParens: true)
            try expectOp(")")
            return e
        case .op("["):
            advance()
            var items: [Expr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return .list(items)
        case .op("{"):
            advance()
            var items: [(Expr, Expr)] = []
            while !isOp("}") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("}") { break }
                let k = try parseExpression()
                try expectOp(":")
                items.append((k, try parseExpression()))
            }
            try expectOp("}")
            return .dict(items)
        default:
            throw error("unexpected \(describe(t.kind))")
        }
    }

    private mutating func parsePostfix(_ base: Expr) throws -> Expr {
        var e = base
        while true {
            if isOp(".") || isOp("[") {
                e = try parseSubscript(e)
            } else if isOp("(") {
                e = .call(e, try parseCallArguments())
            } else {
                return e
            }
        }
    }

    private mutating func parseFilterExpr(_ base: Expr) throws -> Expr {
        var e = base
        while true {
            if isOp("|") {
                advance()
                let name = try parseDottedName()
                var args: [Argument] = []
                if isOp("(") { args = try parseCallArguments() }
                e = .filter(e, name, args)
            } else if isName("is") {
                advance()
                let negated = skipName("not")
                let name = try parseDottedName()
                var args: [Argument] = []
                if isOp("(") {
                    args = try parseCallArguments()
                } else {
                    switch current.kind {
                    case .string, .int, .float, .op("["), .op("{"), .op("("):
                        args = [Argument(name: nil, value: try parsePostfix(try parsePrimary()))]
                    case .name(let n) where !["else", "or", "and", "if", "is"].contains(n):
                        args = [Argument(name: nil, value: try parsePostfix(try parsePrimary()))]
                    default: break
                    }
                }
                e = .test(e, name, args)
                if negated { e = .not(e) }
            } else if isOp("(") {
                e = .call(e, try parseCallArguments())
            } else {
                return e
            }
        }
    }

    private mutating func parseDottedName() throws -> String {
        var n = try expectName()
        while isOp("."), case .name(let more) = next.kind {
            advance(); advance()
            n += "." + more
        }
        return n
    }

    private mutating func parseSubscript(_ base: Expr) throws -> Expr {
        if skipOp(".") {
            switch current.kind {
            case .name(let n):
                advance()
                return .attribute(base, n)
            case .int(let n):
                advance()
                return .item(base, .literal(.int(n)))
            default:
                throw error("expected name or number after '.'")
            }
        }
        try expectOp("[")
        var subs: [Expr] = []
        while !isOp("]") {
            if !subs.isEmpty { try expectOp(",") }
            subs.append(try parseSubscribed(base))
        }
        try expectOp("]")
        if subs.isEmpty { throw error("expected a subscript") }
        if subs.count == 1 {
            if case .slice = subs[0] { return subs[0] }
            return .item(base, subs[0])
        }
        return .item(base, .tuple(subs))
    }

    /// Parses an index or a slice `a:b:c` inside `[...]`.
    private mutating func parseSubscribed(_ base: Expr) throws -> Expr {
        var start: Expr?
        if !isOp(":") {
            start = try parseExpression()
            if !isOp(":") { return start! }
        }
        advance()  // ':'
        var stop: Expr?
        if !isOp("]") && !isOp(",") && !isOp(":") { stop = try parseExpression() }
        var step: Expr?
        if skipOp(":") {
            if !isOp("]") && !isOp(",") { step = try parseExpression() }
        }
        return .slice(base, start, stop, step)
    }

    private mutating func parseCallArguments() throws -> [Argument] {
        try expectOp("(")
        var args: [Argument] = []
        while !isOp(")") {
            if !args.isEmpty { try expectOp(",") }
            if isOp(")") { break }
            if case .name(let n) = current.kind, next.kind == .op("=") {
                advance(); advance()
                args.append(Argument(name: n, value: try parseExpression()))
            } else {
                if isOp("*") || isOp("**") { throw error("*args / **kwargs in calls are not supported") }
                args.append(Argument(name: nil, value: try parseExpression()))
            }
        }
        try expectOp(")")
        return args
    }
}
