import Foundation
import XCTest
@testable import Pagoda

/// Broken files give a LoadError naming the file and the problem, never a crash.
final class CorruptInputTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-corrupt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func expectLoadError(_ path: String, containing words: [String], _ body: () throws -> Void) {
        XCTAssertThrowsError(try body()) { error in
            guard let e = error as? LoadError else { return XCTFail("not a LoadError: \(error)") }
            XCTAssertEqual(e.file, path)
            for w in words { XCTAssertTrue(e.description.contains(w), "\"\(e)\" should mention \(w)") }
        }
    }

    func testTruncatedGGUF() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: Golden.defaultModelPath))
        // Cut in the tensor data, in the header, and right after the magic.
        for (cut, words) in [(full.count / 2, ["truncated", "tensor"]), (5_000, ["truncated"]), (6, ["truncated"])] {
            let path = dir.appendingPathComponent("cut-\(cut).gguf").path
            try full.prefix(cut).write(to: URL(fileURLWithPath: path))
            expectLoadError(path, containing: words) { _ = try GGUFFile(path: path) }
        }
    }

    func testNotAGGUF() throws {
        let path = dir.appendingPathComponent("text.gguf").path
        try Data("hello, this is not a model".utf8).write(to: URL(fileURLWithPath: path))
        expectLoadError(path, containing: ["not a GGUF"]) { _ = try GGUFFile(path: path) }
        expectLoadError("/nonexistent/model.gguf", containing: ["cannot open"]) { _ = try GGUFFile(path: "/nonexistent/model.gguf") }
    }

    func testGGUFWithAbsurdCounts() throws {
        var d = Data("GGUF".utf8)
        var v: UInt32 = 3; d.append(Data(bytes: &v, count: 4))
        var n: UInt64 = 1 << 60; d.append(Data(bytes: &n, count: 8)); d.append(Data(bytes: &n, count: 8))
        let path = dir.appendingPathComponent("absurd.gguf").path
        try d.write(to: URL(fileURLWithPath: path))
        expectLoadError(path, containing: ["corrupt", "tensor count"]) { _ = try GGUFFile(path: path) }
    }

    func testSafetensorsHeaderThatLiesAboutSizes() throws {
        let header = #"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}}"#
        var d = Data()
        var len = UInt64(header.utf8.count); d.append(Data(bytes: &len, count: 8))
        d.append(Data(header.utf8)); d.append(Data(count: 16))  // 16 bytes instead of 64
        let path = dir.appendingPathComponent("lie.safetensors").path
        try d.write(to: URL(fileURLWithPath: path))
        expectLoadError(path, containing: ["truncated", "a"]) { _ = try SafetensorsFile(path: path) }

        let wrong = #"{"b":{"dtype":"F32","shape":[4,4],"data_offsets":[0,12]}}"#
        var d2 = Data()
        var len2 = UInt64(wrong.utf8.count); d2.append(Data(bytes: &len2, count: 8))
        d2.append(Data(wrong.utf8)); d2.append(Data(count: 64))
        let path2 = dir.appendingPathComponent("wrong.safetensors").path
        try d2.write(to: URL(fileURLWithPath: path2))
        expectLoadError(path2, containing: ["b", "needs 64 bytes"]) { _ = try SafetensorsFile(path: path2) }

        var d3 = Data()
        var huge = UInt64(1 << 40); d3.append(Data(bytes: &huge, count: 8)); d3.append(Data("{}".utf8))
        let path3 = dir.appendingPathComponent("huge.safetensors").path
        try d3.write(to: URL(fileURLWithPath: path3))
        expectLoadError(path3, containing: ["header length"]) { _ = try SafetensorsFile(path: path3) }
    }

    func testConfigMissingFields() throws {
        let config = dir.appendingPathComponent("config.json")
        try Data(#"{"model_type": "llama", "hidden_size": 64}"#.utf8).write(to: config)
        expectLoadError(config.path, containing: ["missing", "num_attention_heads"]) { _ = try ModelConfig.fromHuggingFace(folder: dir) }
        try Data(#"{"model_type": "whisper"}"#.utf8).write(to: config)
        expectLoadError(config.path, containing: ["whisper", "not supported"]) { _ = try ModelConfig.fromHuggingFace(folder: dir) }
        try Data("not json".utf8).write(to: config)
        expectLoadError(config.path, containing: ["JSON"]) { _ = try ModelConfig.fromHuggingFace(folder: dir) }
    }

    func testMissingTensor() throws {
        let folder = Golden.url("archs/qwen2")
        var store = try WeightStore.huggingFace(folder: folder)
        let config = try ModelConfig.fromHuggingFace(folder: folder)
        store = WeightStore(source: folder.path)  // no tensors at all
        expectLoadError(folder.path, containing: ["missing tensor", "token_embd"]) { _ = try LlamaModel(config: config, weights: store) }
    }
}
