import Foundation
import Pagoda

/// Compact JSON text for response bodies, keeping the key order of objects.
extension JinjaValue {
    public func jsonText() -> String {
        var out = ""
        out.reserveCapacity(256)
        JinjaValue.write(self, into: &out)
        return out
    }

    static func write(_ v: JinjaValue, into out: inout String) {
        switch v {
        case .undefined, .none, .opaque: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += formatDouble(d)
        case .string(let s): writeString(s, into: &out)
        case .array(let a):
            out += "["
            for (i, x) in a.enumerated() {
                if i > 0 { out += "," }
                write(x, into: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            var first = true
            for (k, x) in o.pairs {
                if !first { out += "," }
                first = false
                writeString(k, into: &out)
                out += ":"
                write(x, into: &out)
            }
            out += "}"
        }
    }

    static func formatDouble(_ d: Double) -> String {
        // JSON has no infinities; vLLM reports -inf log-probabilities as -9999.0.
        guard d.isFinite else { return d.isNaN ? "null" : (d < 0 ? "-9999.0" : "9999.0") }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int(d)) + ".0" }
        return "\(d)"
    }

    static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    out += "\\u" + String(format: "%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
