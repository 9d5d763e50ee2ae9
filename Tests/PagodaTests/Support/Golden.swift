import Foundation
import XCTest
@testable import Pagoda

/// Locations of the golden references and the default model, found from this file's path.
enum Golden {
    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    static let root: URL = {
        if let env = ProcessInfo.processInfo.environment["PAGODA_GOLDEN"] { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/golden")
    }()

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    static var defaultModelPath: String {
        packageRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    }

    /// Each line of a JSON-lines file as a dictionary.
    static func jsonLines(_ relative: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: url(relative), encoding: .utf8)
        return try text.split(separator: "\n").map {
            guard let obj = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else {
                throw LoadError(file: relative, message: "line is not a JSON object")
            }
            return obj
        }
    }
}

extension Array where Element == Any {
    var ints: [Int] { compactMap { ($0 as? NSNumber)?.intValue } }
    var floats: [Float] { compactMap { ($0 as? NSNumber)?.floatValue } }
}
