import Foundation
import XCTest
@testable import Pagoda

/// Models shared by the tests, loaded once.
enum TestModels {
    static let pool = ThreadPool()

    static let smolGGUF: GGUFFile = try! GGUFFile(path: Golden.defaultModelPath)
    /// The default path: quantized weights with int8 activations (unless PAGODA_FP32_WEIGHTS=1).
    static let smol: LlamaModel = {
        let g = smolGGUF
        return try! LlamaModel(config: ModelConfig.fromGGUF(g), weights: WeightStore.gguf(g))
    }()
    /// The fp32 reference path (weights dequantized to fp32), for the strict comparisons with Transformers.
    static let smolFP32: LlamaModel = {
        let g = smolGGUF
        return try! LlamaModel(config: ModelConfig.fromGGUF(g), weights: WeightStore.gguf(g), fp32Weights: true)
    }()

    /// Logits at every listed position of one sequence run through a fresh cache in one forward pass.
    static func logits(_ model: LlamaModel, ids: [Int], rows: [Int]? = nil) -> [[Float]] {
        let bs = 16
        let blocks = (ids.count + bs - 1) / bs
        let cache = KVCacheStorage(config: model.config, blockCount: max(blocks, 1), blockSize: bs, dtype: .automatic(for: model))
        let rows = rows ?? Array(ids.indices)
        let batch = ForwardBatch(
            tokens: ids.map(Int32.init), positions: ids.indices.map(Int32.init),
            sequences: [AttentionSequence(tokenStart: 0, tokenCount: ids.count, startPosition: 0, blockTable: (0..<Int32(blocks)).map { $0 })],
            logitRows: rows)
        let flat = model.forward(batch, cache: cache, pool: pool)
        let v = model.config.vocabSize
        return rows.indices.map { Array(flat[$0 * v..<($0 + 1) * v]) }
    }
}

/// y[tokens × rows] from a matrix-multiply call `body(x, y, bias)` on array inputs (y starts as NaN, so rows
/// the call misses show up).
func multiplyForTest(rows: Int, x: [Float], tokens: Int, bias: [Float]?,
                     _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafePointer<Float>?) -> Void) -> [Float] {
    var y = [Float](repeating: .nan, count: tokens * rows)
    x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in
            if let bias {
                bias.withUnsafeBufferPointer { body(xp.baseAddress!, yp.baseAddress!, $0.baseAddress!) }
            } else {
                body(xp.baseAddress!, yp.baseAddress!, nil)
            }
        }
    }
    return y
}

/// A matrix product `multiply(x, tokens, y, bias)` of `w[rows × cols]`, on every code path: each output within
/// 1e-5 of Σ|w·x| (+ 1e-7) of a double-precision reference, and each token alone giving bitwise what it gives inside
/// the batch (decode and prefill tiles). Leaves the detected code path in force.
func checkMatrixProduct(rows: Int, cols: Int, w: [Float], x: [Float], tokens: Int, bias: [Float], label: String,
                        multiply: (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?) -> Void,
                        file: StaticString = #filePath, line: UInt = #line) {
    QuantizedMatrix.forceISA(-1)
    for isa in 0...QuantizedMatrix.isa {
        QuantizedMatrix.forceISA(isa)
        let y = multiplyForTest(rows: rows, x: x, tokens: tokens, bias: bias) { multiply($0, tokens, $1, $2) }
        for tk in 0..<tokens {
            for r in 0..<rows {
                var ref = Double(bias[r]), mag = abs(Double(bias[r]))
                for k in 0..<cols {
                    ref += Double(w[r * cols + k]) * Double(x[tk * cols + k])
                    mag += abs(Double(w[r * cols + k]) * Double(x[tk * cols + k]))
                }
                XCTAssertEqual(Double(y[tk * rows + r]), ref, accuracy: 1e-5 * mag + 1e-7,
                               "\(label) \(rows)x\(cols) isa \(isa) token \(tk) row \(r)", file: file, line: line)
            }
        }
        for tk in 0..<tokens {
            let one = multiplyForTest(rows: rows, x: Array(x[tk * cols..<(tk + 1) * cols]), tokens: 1, bias: bias) {
                multiply($0, 1, $1, $2)
            }
            XCTAssertEqual(one.map(\.bitPattern), Array(y[tk * rows..<(tk + 1) * rows]).map(\.bitPattern),
                           "\(label) \(rows)x\(cols) isa \(isa): token \(tk) alone differs", file: file, line: line)
        }
    }
    QuantizedMatrix.forceISA(-1)
}
