import Foundation
import XCTest
@testable import Pagoda

/// The hand-written pre-tokenizer scanners against the regexes they implement (ICU via NSRegularExpression),
/// on the golden texts and on random strings mixing the character classes the rules distinguish.
/// (U+000B and U+0085 are left out: ICU's \s lacks them, Unicode White_Space has them.)
final class TokenizerScannerTests: XCTestCase {
    let alphabet: [String] = [" ", " ", " ", "\n", "\r", "\t", "a", "b", "Z", "é", "中", "1", "2", "٣", "½", "'", "s", "t",
                              "L", "l", "r", "e", "v", "m", "d", "D", "!", ".", "-", "🙂", "\u{00A0}", "\u{200B}", "\u{3000}",
                              "\u{0301}", "ⅻ", "_", "$"]

    func regexSplit(_ pattern: String, _ text: String) -> [String] {
        let re = try! NSRegularExpression(pattern: pattern)
        let ns = text as NSString
        var out: [String] = []
        var last = 0
        for m in re.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            if m.range.location > last { out.append(ns.substring(with: NSRange(location: last, length: m.range.location - last))) }
            out.append(ns.substring(with: m.range))
            last = m.range.location + m.range.length
        }
        if last < ns.length { out.append(ns.substring(from: last)) }
        return out
    }

    func scan(_ step: PreTokenizerStep, _ text: String) -> [String] {
        PreTokenizer(steps: [step]).split(Array(text.unicodeScalars), isFirstFragment: true).map {
            var v = String.UnicodeScalarView(); v.append(contentsOf: $0); return String(v)
        }
    }

    func testScannersMatchRegexes() throws {
        var texts: [String] = []
        for f in ["hf/tokenize.jsonl", "llamacpp/set2/tokenize.jsonl"] {
            texts += try TokTestPaths.jsonLines(TokTestPaths.golden.appendingPathComponent(f)).map { $0["text"] as! String }
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let n = Int.random(in: 1...14, using: &rng)
            texts.append((0..<n).map { _ in alphabet.randomElement(using: &rng)! }.joined())
        }
        let patterns: [(String, PreTokenizerStep)] = [
            (#"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#, .gpt2),
            (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, .llama3(maxDigits: 3)),
            (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, .llama3(maxDigits: 1)),
        ]
        var failures: [String] = []
        for (pattern, step) in patterns {
            for t in texts {
                let a = scan(step, t), b = regexSplit(pattern, t)
                if a != b { failures.append("\(step) \(String(reflecting: t)): scanner \(a) regex \(b)") }
            }
        }
        XCTAssertEqual(failures.count, 0, failures.prefix(20).joined(separator: "\n"))
    }
}
