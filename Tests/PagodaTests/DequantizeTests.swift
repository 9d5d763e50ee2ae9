import Foundation
import XCTest
@testable import Pagoda

/// Every dequantizer against gguf-py (llama.cpp's reference package) on random blocks.
final class DequantizeTests: XCTestCase {
    func testDequantizeMatchesGGUFPy() throws {
        let python = Golden.packageRoot.appendingPathComponent(".venv-test/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            return XCTFail("\(python) is missing: run scripts/test (it runs scripts/setup-test-env)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-deq-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [Golden.packageRoot.appendingPathComponent("Tests/Scripts/dequant_reference.py").path, dir.path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "dequant_reference.py failed")
        let types: [DType] = [.f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .q8_K]
        for t in types {
            let raw = try Data(contentsOf: dir.appendingPathComponent("\(t).bin"))
            let ref = try Data(contentsOf: dir.appendingPathComponent("\(t).f32"))
            let count = ref.count / 4
            XCTAssertEqual(raw.count, t.byteCount(elements: count), "\(t): byte count")
            var ours = [Float](repeating: 0, count: count)
            raw.withUnsafeBytes { src in
                ours.withUnsafeMutableBufferPointer { dequantize(t, src.baseAddress!, $0.baseAddress!, count: count) }
            }
            let expected = ref.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            var mismatches = 0
            for i in 0..<count where abs(ours[i] - expected[i]) > 1e-6 * max(1, abs(expected[i])) { mismatches += 1 }
            XCTAssertEqual(mismatches, 0, "\(t): \(mismatches) of \(count) values differ from gguf-py")
        }
    }
}
