import Foundation
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
