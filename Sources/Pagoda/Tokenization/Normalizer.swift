import Foundation

/// Hugging Face normalizers that appear in tokenizer.json files.
enum NormalizerStep: Sendable {
    case prepend(String)
    case replace(String, String)
    case replaceRegex(RegexBox, String)
    case lowercase
    case nfc, nfd, nfkc, nfkd
    case stripAccents
    case bert(cleanText: Bool, chineseChars: Bool, stripAccents: Bool, lowercase: Bool)
    case strip(left: Bool, right: Bool)

    func apply(_ s: String) -> String {
        switch self {
        case .prepend(let p):
            return s.isEmpty ? s : p + s
        case .replace(let pattern, let content):
            return pattern.isEmpty ? s : s.replacingOccurrences(of: pattern, with: content)
        case .replaceRegex(let box, let content):
            let ns = s as NSString
            return box.regex.stringByReplacingMatches(in: s, options: [], range: NSRange(location: 0, length: ns.length),
                                                      withTemplate: NSRegularExpression.escapedTemplate(for: content))
        case .lowercase:
            return s.lowercased()
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .stripAccents:
            var out = String.UnicodeScalarView()
            for c in s.unicodeScalars where c.properties.generalCategory != .nonspacingMark { out.append(c) }
            return String(out)
        case .strip(let left, let right):
            var sc = Array(s.unicodeScalars)
            if right { while let l = sc.last, l.properties.isWhitespace { sc.removeLast() } }
            if left { while let f = sc.first, f.properties.isWhitespace { sc.removeFirst() } }
            var out = String.UnicodeScalarView()
            out.append(contentsOf: sc)
            return String(out)
        case .bert(let cleanText, let chineseChars, let strip, let lower):
            var out = String.UnicodeScalarView()
            for c in s.unicodeScalars {
                if cleanText {
                    if c.value == 0 || c.value == 0xFFFD { continue }
                    if c == "\t" || c == "\n" || c == "\r" { out.append(" "); continue }
                    let cat = c.properties.generalCategory
                    if cat == .control || cat == .format || cat == .privateUse || cat == .unassigned { continue }
                    if c.properties.isWhitespace { out.append(" "); continue }
                }
                if chineseChars && c.isCJKIdeograph {
                    out.append(" "); out.append(c); out.append(" ")
                } else {
                    out.append(c)
                }
            }
            var r = String(out)
            if strip { r = NormalizerStep.stripAccents.apply(r.decomposedStringWithCanonicalMapping) }
            if lower { r = r.lowercased() }
            return r
        }
    }
}
