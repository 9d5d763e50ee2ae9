// Syntax tree of a parsed template.

struct Argument: Sendable {
    var name: String?   // nil for positional arguments
    var value: Expr
}

indirect enum Expr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case list([Expr])
    case tuple([Expr])
    case dict([(Expr, Expr)])
    case attribute(Expr, String)
    case item(Expr, Expr)
    case slice(Expr, Expr?, Expr?, Expr?)
    case call(Expr, [Argument])
    case filter(Expr, String, [Argument])
    case test(Expr, String, [Argument])
    case not(Expr)
    case negate(Expr)
    case plus(Expr)
    case binary(String, Expr, Expr)      // + - * / // % ** ~
    case and(Expr, Expr)
    case or(Expr, Expr)
    case compare(Expr, [(String, Expr)]) // == != < <= > >= in notin
    case conditional(Expr, Expr, Expr?)  // then, condition, else
}

indirect enum AssignTarget: Sendable {
    case name(String)
    case tuple([AssignTarget])
    case attribute(String, String)  // namespace.attr
}

struct MacroDefinition: Sendable {
    var name: String
    var parameters: [(String, Expr?)]
    var body: [Node]
}

struct FilterCall: Sendable {
    var name: String
    var arguments: [Argument]
    var line: Int
}

struct ForLoop: Sendable {
    var target: AssignTarget
    var iterable: Expr
    var condition: Expr?
    var body: [Node]
    var elseBody: [Node]
    var recursive: Bool
}

indirect enum Node: Sendable {
    case text(String)
    case output(Expr, line: Int)
    case ifChain([(Expr, [Node])], elseBody: [Node], line: Int)
    case forLoop(ForLoop, line: Int)
    case set(AssignTarget, Expr, line: Int)
    case setBlock(AssignTarget, [FilterCall], [Node], line: Int)
    case macro(MacroDefinition, line: Int)
    case callBlock(Expr, parameters: [(String, Expr?)], body: [Node], line: Int)
    case filterBlock([FilterCall], [Node], line: Int)
    case with([(AssignTarget, Expr)], [Node], line: Int)
    case breakLoop(line: Int)
    case continueLoop(line: Int)
    case expression(Expr, line: Int)  // {% do %}
}
