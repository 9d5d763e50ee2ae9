import Foundation

/// An insertion-ordered dictionary, like a Python dict decoded from JSON. Keys are strings,
/// except that template dict literals may also use integer keys (`{1024: 512}`).
public struct JinjaObject: Sendable, Equatable {
    enum Key: Hashable, Sendable {
        case string(String)
        case int(Int)

        var value: JinjaValue {
            switch self {
            case .string(let s): return .string(s)
            case .int(let i): return .int(i)
            }
        }
    }

    private(set) var orderedKeys: [Key] = []
    private var storage: [Key: JinjaValue] = [:]

    public init() {}

    public init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    /// Keys in insertion order (integer keys are given in decimal).
    public var keys: [String] {
        orderedKeys.map { k in
            switch k {
            case .string(let s): return s
            case .int(let i): return String(i)
            }
        }
    }

    public var count: Int { orderedKeys.count }
    public var isEmpty: Bool { orderedKeys.isEmpty }
    public var pairs: [(String, JinjaValue)] { zip(keys, values).map { ($0, $1) } }
    public var values: [JinjaValue] { orderedKeys.map { storage[$0]! } }
    /// Keys as template values (strings or ints) with their values.
    var valuePairs: [(JinjaValue, JinjaValue)] { orderedKeys.map { ($0.value, storage[$0]!) } }
    var keyValues: [JinjaValue] { orderedKeys.map(\.value) }

    public subscript(key: String) -> JinjaValue? {
        get { storage[.string(key)] }
        set { set(.string(key), newValue) }
    }

    /// Python-style lookup by a template value; nil when the key is absent or unhashable here.
    subscript(value key: JinjaValue) -> JinjaValue? {
        get { Self.key(key).flatMap { storage[$0] } }
        set { if let k = Self.key(key) { set(k, newValue) } }
    }

    static func key(_ v: JinjaValue) -> Key? {
        switch v {
        case .string(let s): return .string(s)
        case .int(let i): return .int(i)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d): return d == d.rounded() && abs(d) < 9e18 ? .int(Int(d)) : nil
        default: return nil
        }
    }

    private mutating func set(_ key: Key, _ newValue: JinjaValue?) {
        if let newValue {
            if storage.updateValue(newValue, forKey: key) == nil { orderedKeys.append(key) }
        } else if storage.removeValue(forKey: key) != nil {
            orderedKeys.removeAll { $0 == key }
        }
    }

    /// Python dict equality: same keys and equal values, order does not matter.
    public static func == (a: JinjaObject, b: JinjaObject) -> Bool {
        guard a.count == b.count else { return false }
        for (k, v) in a.storage {
            guard let w = b.storage[k], v == w else { return false }
        }
        return true
    }
}

/// A value inside the template engine. JSON-like data plus opaque runtime objects
/// (namespaces, macros, generators, loop objects, bound methods).
public enum JinjaValue: Sendable, Equatable {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    case object(JinjaObject)
    /// Runtime-only values produced by the interpreter.
    case opaque(JinjaOpaque)

    public static func == (a: JinjaValue, b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x == y
        case let (.opaque(x), .opaque(y)): return x === y
        default: return false
        }
    }
}

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JinjaValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .object(JinjaObject(elements)) }
    public init(nilLiteral: ()) { self = .none }
}

extension JinjaValue {
    /// Converts `JSONSerialization` output. Note that Foundation dictionaries do not keep key
    /// order; use `JinjaValue.parseJSON` when the order of keys matters.
    public init(json: Any) {
        switch json {
        case is NSNull:
            self = .none
        case let s as String:
            self = .string(s)
        case let n as NSNumber:
            // Booleans from JSONSerialization are CFBoolean instances (`__NSCFBoolean`) on every platform.
            let objCType = String(cString: n.objCType)
            if String(describing: type(of: n)).contains("Boolean") {
                self = .bool(n.boolValue)
            } else if objCType == "d" || objCType == "f" {
                self = .double(n.doubleValue)
            } else {
                self = .int(n.intValue)
            }
        case let a as [Any]:
            self = .array(a.map { JinjaValue(json: $0) })
        case let d as [String: Any]:
            var o = JinjaObject()
            for k in d.keys.sorted() { o[k] = JinjaValue(json: d[k]!) }
            self = .object(o)
        case let b as Bool:
            self = .bool(b)
        case let i as Int:
            self = .int(i)
        case let x as Double:
            self = .double(x)
        default:
            self = .none
        }
    }

    /// Converts back to Foundation JSON objects (key order is lost in dictionaries).
    public var jsonObject: Any {
        switch self {
        case .undefined, .none, .opaque: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map { $0.jsonObject }
        case .object(let o):
            var d: [String: Any] = [:]
            for (k, v) in o.pairs { d[k] = v.jsonObject }
            return d
        }
    }

    public var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    public var stringValue: String? {
        switch self {
        case .string(let s): return s
        case .opaque(let o): if case .markup(let s) = o.kind { return s } else { return nil }
        default: return nil
        }
    }

    /// Markup strings behave as plain strings everywhere except in `+`; tuples behave as lists
    /// everywhere except when printed.
    var plain: JinjaValue {
        if case .opaque(let o) = self {
            if case .markup(let s) = o.kind { return .string(s) }
            if case .tuple(let items) = o.kind { return .array(items) }
        }
        return self
    }

    static func tuple(_ items: [JinjaValue]) -> JinjaValue { .opaque(JinjaOpaque(.tuple(items))) }

    var isMarkup: Bool {
        if case .opaque(let o) = self, case .markup = o.kind { return true }
        return false
    }

    public subscript(key: String) -> JinjaValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
}

// MARK: - Opaque runtime values

/// Runtime objects that only exist while a template renders (namespaces, macros, generators, ...).
/// Reference type on purpose: a `namespace()` is shared by every scope that sees it, as in Jinja.
/// `@unchecked Sendable` is sound because these objects are created and mutated only by the
/// single thread executing one `render` call and never escape it except as inert values.
public final class JinjaOpaque: @unchecked Sendable {
    enum Kind {
        case namespace
        case macro(MacroValue)
        case builtin(String)
        case generator([JinjaValue])
        case loop(LoopState)
        case boundMethod(JinjaValue, String)
        case unsafeMethod(String, String)   // (type name, attribute) - calling raises like the sandbox
        case markup(String)                 // a string marked safe (`|safe`); `+` escapes plain strings
        case tuple([JinjaValue])            // a Python tuple: behaves as a list except when printed

    }
    let kind: Kind
    /// Attributes of a namespace.
    var attributes = JinjaObject()

    init(_ kind: Kind) { self.kind = kind }
}

struct LoopState {
    var items: [JinjaValue]
    var index0: Int
    var depth0: Int
}

struct MacroValue {
    let definition: MacroDefinition
    let closure: Scope
    let caller: JinjaValue?
}
