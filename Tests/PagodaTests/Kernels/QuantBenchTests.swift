import Foundation
import XCTest
@testable import Pagoda

/// Throughput of the default model, fp32 weights vs quantized: runs only with PAGODA_BENCH=1
/// (PAGODA_BENCH_THREADS=n sets the thread count, default 2).
///   PAGODA_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter QuantBench
final class QuantBenchTests: XCTestCase {
    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    func testQuantBenchModelThroughput() throws {
        guard ProcessInfo.processInfo.environment["PAGODA_BENCH"] == "1" else { throw XCTSkip("set PAGODA_BENCH=1") }
        let threads = Int(ProcessInfo.processInfo.environment["PAGODA_BENCH_THREADS"] ?? "") ?? 2
        let pool = ThreadPool(threadCount: threads)
        for (name, model) in [("quantized", TestModels.smol), ("fp32", TestModels.smolFP32)] {
            let c = model.config
            let bs = 16
            // prefill: one 512-token prompt in one forward pass
            let n = 512
            var best = Double.infinity
            for _ in 0..<2 {
                let cache = KVCacheStorage(config: c, blockCount: n / bs, blockSize: bs)
                let ids = (0..<n).map { Int32(($0 * 7919) % 20000 + 100) }
                let batch = ForwardBatch(tokens: ids, positions: (0..<Int32(n)).map { $0 },
                                         sequences: [AttentionSequence(tokenStart: 0, tokenCount: n, startPosition: 0,
                                                                       blockTable: (0..<Int32(n / bs)).map { $0 })],
                                         logitRows: [n - 1])
                let t0 = now()
                _ = model.forward(batch, cache: cache, pool: pool)
                best = min(best, now() - t0)
            }
            let prefill = Double(n) / best
            if ForwardProfile.enabled { print("prefill " + ForwardProfile.report()) }
            // decode: 128 single-token steps after a 16-token prompt
            let steps = 128, total = 16 + steps
            let blocks = (total + bs - 1) / bs
            let cache = KVCacheStorage(config: c, blockCount: blocks, blockSize: bs)
            let table = (0..<Int32(blocks)).map { $0 }
            _ = model.forward(ForwardBatch(tokens: (0..<16).map { Int32($0 + 300) }, positions: (0..<16).map { Int32($0) },
                                           sequences: [AttentionSequence(tokenStart: 0, tokenCount: 16, startPosition: 0, blockTable: table)],
                                           logitRows: [15]), cache: cache, pool: pool)
            var tok: Int32 = 400
            let t0 = now()
            for s in 0..<steps {
                let logits = model.forward(ForwardBatch(tokens: [tok], positions: [Int32(16 + s)],
                                                        sequences: [AttentionSequence(tokenStart: 0, tokenCount: 1, startPosition: 16 + s, blockTable: table)],
                                                        logitRows: [0]), cache: cache, pool: pool)
                tok = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
            }
            let decode = Double(steps) / (now() - t0)
            if ForwardProfile.enabled { print("decode " + ForwardProfile.report()) }
            print(String(format: "bench %@: decode %.1f tok/s (1 sequence, 128 steps), prefill %.1f tok/s (512-token prompt), %d threads",
                         name, decode, prefill, threads))
        }
        // the LM head alone (49152 × 576 Q8_0), one token
        let g = TestModels.smolGGUF
        let store = try WeightStore.gguf(g)
        let embd = try store.require("token_embd.weight", shape: [49152, 576])
        let qm = try QuantizedMatrix(embd)
        let x = (0..<576).map { Float(sin(Double($0))) }
        var y = [Float](repeating: 0, count: 49152)
        let reps = 50
        let t0 = now()
        for _ in 0..<reps { x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { qm.multiply(x: xp.baseAddress!, tokens: 1, y: $0.baseAddress!, bias: nil, pool: pool) } } }
        let dt = (now() - t0) / Double(reps)
        print(String(format: "bench LM head Q8_0 GEMV: %.3f ms, %.1f GB/s of repacked weights, %.1f GOPS", dt * 1e3,
                     Double(qm.byteCount) / dt / 1e9, 2.0 * 49152 * 576 / dt / 1e9))
    }
}
