import Foundation

/// Character classes used by the pre-tokenizers (the `\p{..}` / `\s` classes of the reference regexes).
struct CharFlags: OptionSet, Sendable {
    let rawValue: UInt8
    static let letter = CharFlags(rawValue: 1)        // \p{L}
    static let number = CharFlags(rawValue: 2)        // \p{N}
    static let whitespace = CharFlags(rawValue: 4)    // \s (Unicode White_Space)
    static let punctuation = CharFlags(rawValue: 8)   // \p{P}
    static let symbol = CharFlags(rawValue: 16)       // \p{S}
    static let control = CharFlags(rawValue: 32)      // \p{C}
    static let mark = CharFlags(rawValue: 64)         // \p{M}

    private static let asciiTable: [CharFlags] = (0..<128).map { computeFlags(Unicode.Scalar(UInt8($0))) }

    @inline(__always)
    static func of(_ s: Unicode.Scalar) -> CharFlags {
        if s.value < 128 { return asciiTable[Int(s.value)] }
        return computeFlags(s)
    }

    static func computeFlags(_ s: Unicode.Scalar) -> CharFlags {
        var f: CharFlags = []
        let p = s.properties
        if p.isWhitespace { f.insert(.whitespace) }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            f.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            f.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            f.insert(.punctuation)
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            f.insert(.symbol)
        case .control, .format, .surrogate, .privateUse, .unassigned:
            f.insert(.control)
        case .nonspacingMark, .spacingMark, .enclosingMark:
            f.insert(.mark)
        default:
            break
        }
        return f
    }
}

/// GPT-2's reversible byte ↔ unicode mapping used by byte-level BPE.
enum ByteLevel {
    /// byte → the character that stands for it in the vocabulary.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    /// scalar value → byte (for scalars below 324), or -1.
    static let scalarToByte: [Int16] = {
        var t = [Int16](repeating: -1, count: 324)
        for (b, s) in byteToScalar.enumerated() { t[Int(s.value)] = Int16(b) }
        return t
    }()

    /// Encodes raw bytes as the byte-level alphabet string.
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(byteToScalar[Int(b)]) }
        return String(s)
    }

    /// Undoes the mapping; nil when some character is not part of the byte alphabet.
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            guard s.value < 324 else { return nil }
            let b = scalarToByte[Int(s.value)]
            guard b >= 0 else { return nil }
            out.append(UInt8(b))
        }
        return out
    }
}

extension Unicode.Scalar {
    /// CJK ideographs as BERT's tokenizer defines them.
    var isCJKIdeograph: Bool {
        let c = value
        return (0x4E00...0x9FFF).contains(c) || (0x3400...0x4DBF).contains(c)
            || (0x20000...0x2A6DF).contains(c) || (0x2A700...0x2B73F).contains(c)
            || (0x2B740...0x2B81F).contains(c) || (0x2B820...0x2CEAF).contains(c)
            || (0xF900...0xFAFF).contains(c) || (0x2F800...0x2FA1F).contains(c)
    }
}

/// A byte-level UTF-8 helper: how many bytes of the tail of `bytes` form an incomplete
/// (but so far valid) UTF-8 sequence that later bytes could complete.
func incompleteUTF8TailLength(_ bytes: [UInt8]) -> Int {
    let n = bytes.count
    var i = n - 1
    var back = 0
    // Find the last non-continuation byte within the last 4 bytes.
    while i >= 0 && back < 4 {
        let b = bytes[i]
        if b & 0xC0 != 0x80 { break }
        i -= 1
        back += 1
    }
    guard i >= 0 && back < 4 else { return 0 }
    let lead = bytes[i]
    let need: Int
    switch lead {
    case 0xC2...0xDF: need = 2
    case 0xE0...0xEF: need = 3
    case 0xF0...0xF4: need = 4
    default: return 0
    }
    let have = n - i
    guard have < need else { return 0 }
    // Check the second byte's restricted range, if present.
    if have >= 2 {
        let b1 = bytes[i + 1]
        switch lead {
        case 0xE0: if b1 < 0xA0 { return 0 }
        case 0xED: if b1 > 0x9F { return 0 }
        case 0xF0: if b1 < 0x90 { return 0 }
        case 0xF4: if b1 > 0x8F { return 0 }
        default: break
        }
    }
    return have
}
