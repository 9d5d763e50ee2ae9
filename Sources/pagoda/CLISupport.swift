import ArgumentParser
import Foundation
import Pagoda

/// Default model path, relative to the current directory (scripts/fetch-model puts it there).
let defaultModelPath = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/// A failure the CLI reports as one line on standard error, exiting with status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

func writeStdout(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

func writeStderr(_ s: String) {
    FileHandle.standardError.write(Data(s.utf8))
}

func jsonString(_ object: Any) throws -> String {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}

/// Loads only the tokenizer of a GGUF file (vocab-only files work) or a Hugging Face folder.
func loadTokenizer(path: String) throws -> Tokenizer {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw LoadError(file: path, message: "no such file or folder")
    }
    if isDir.boolValue {
        let folder = URL(fileURLWithPath: path)
        let cfg = folder.appendingPathComponent("tokenizer_config.json")
        return try Tokenizer.fromHuggingFace(tokenizerJSON: folder.appendingPathComponent("tokenizer.json"),
                                             tokenizerConfig: FileManager.default.fileExists(atPath: cfg.path) ? cfg : nil)
    }
    return try Tokenizer.fromGGUF(GGUFFile(path: path))
}

/// The date `strftime_now` sees: "YYYY-MM-DD" at midnight UTC, or now.
func parseDate(_ s: String?) throws -> Date {
    guard let s else { return Date() }
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyy-MM-dd"
    guard let d = f.date(from: s) else { throw CLIError("--date: expected YYYY-MM-DD, got \(s)") }
    return d
}

/// The `--kv-cache-dtype` option of serve, generate and the offline benchmarks.
enum KVCacheDtypeArgument: String, ExpressibleByArgument, CaseIterable {
    case auto, f16, f32, u8

    static let help: ArgumentHelp = "KV-cache element type: auto (u8 for quantized weights, else f32), u8 (8-bit codes with a scale and minimum per token and 16 dimensions: 58% of f16's bytes at 64-dimension heads), f16 or f32 (exact)."

    /// nil for `auto`: the engine decides.
    var dtype: KVCacheDType? { self == .auto ? nil : KVCacheDType(rawValue: rawValue) }
}
