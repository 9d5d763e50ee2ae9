import Foundation
import XCTest
@testable import Pagoda

enum TokTestPaths {
    static var packageRoot: URL { Golden.packageRoot }
    static var golden: URL { Golden.root }
    static var smolLM: URL { URL(fileURLWithPath: Golden.defaultModelPath) }

    static func requireFile(_ url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("missing \(url.path)")
        }
    }

    static func jsonLines(_ url: URL) throws -> [[String: Any]] {
        try requireFile(url)
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}

/// Loaded once per test process: the SmolLM2 tokenizer from the default model's GGUF.
final class SharedTokenizers: @unchecked Sendable {
    static let shared = SharedTokenizers()
    private let lock = NSLock()
    private var cache: [String: Tokenizer] = [:]

    func gguf(_ url: URL) throws -> Tokenizer {
        lock.lock(); defer { lock.unlock() }
        if let t = cache[url.path] { return t }
        try TokTestPaths.requireFile(url)
        let t = try Tokenizer.fromGGUF(GGUFFile(path: url.path))
        cache[url.path] = t
        return t
    }
}

func ints(_ v: Any?) -> [Int] { (v as? [Any] ?? []).map { ($0 as! NSNumber).intValue } }
