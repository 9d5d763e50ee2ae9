import Foundation
import PagodaKernelsC

/// Per-kernel speed against the machine's measured limits (`pagoda bench kernels`).
///
/// Each op runs on inputs shaped like a layer of the model (random weights of each dtype), timed as the best
/// of several repetitions; GEMVs are rated by weight bytes read per second against the measured DRAM read
/// bandwidth, GEMMs and attention by operations per second against the measured fp32 FMA or int8 dot peak.
public enum KernelBenchmark {
    /// The machine's limits on `threads` threads.
    public struct Peaks: Sendable, Codable {
        public var threads: Int
        /// DRAM read bandwidth, GB/s (a 256 MiB buffer summed by all threads).
        public var readGBs: Double
        /// fp32 FMA throughput, GFLOP/s (two flops per lane per FMA).
        public var fp32GFLOPs: Double
        /// int8 dot-product throughput of the quantized kernels' instruction (vpdpbusd where present), GOP/s.
        public var int8GOPs: Double
        /// AMX-BF16 tile throughput (the wide product's instruction), GFLOP/s; 0 where the wide product is unavailable.
        public var bf16TileGFLOPs: Double
    }

    /// One measured op.
    public struct Result: Sendable, Codable {
        public var op: String
        public var dtype: String
        public var shape: String
        public var microseconds: Double
        /// Arithmetic throughput (GFLOP/s for fp32, GOP/s for int8 paths).
        public var gops: Double
        /// Bytes of weights (or KV cache) read per second.
        public var gbs: Double
        /// Percentage of the limit that bounds this op: bandwidth for GEMV and decode attention, compute otherwise.
        public var percentOfPeak: Double
        public var bound: String
    }

    /// Shapes of one layer of the model being measured.
    public struct Shapes: Sendable {
        public var hidden: Int
        public var intermediate: Int
        public var vocab: Int
        public var heads: Int
        public var kvHeads: Int
        public var headDim: Int

        public init(hidden: Int, intermediate: Int, vocab: Int, heads: Int, kvHeads: Int, headDim: Int) {
            self.hidden = hidden
            self.intermediate = intermediate
            self.vocab = vocab
            self.heads = heads
            self.kvHeads = kvHeads
            self.headDim = headDim
        }

        public init(_ c: ModelConfig) {
            self.init(hidden: c.hiddenSize, intermediate: c.intermediateSize, vocab: c.vocabSize, heads: c.headCount,
                      kvHeads: c.kvHeadCount, headDim: c.headDim)
        }

        /// SmolLM2-135M.
        public static let smolLM2 = Shapes(hidden: 576, intermediate: 1536, vocab: 49152, heads: 9, kvHeads: 3, headDim: 64)
    }

    /// Best time of `body` over `reps` runs after one warm-up, in seconds.
    static func best(reps: Int, _ body: () -> Void) -> Double {
        body()
        var b = Double.infinity
        for _ in 0..<reps {
            let t0 = monotonicNow()
            body()
            b = min(b, monotonicNow() - t0)
        }
        return b
    }

    /// Measures the machine's read bandwidth and compute peaks on the pool's threads.
    public static func measurePeaks(pool: ThreadPool) -> Peaks {
        let count = 64 << 20  // floats: 256 MiB
        let buf = FloatBuffer(count: count)
        for i in stride(from: 0, to: count, by: 1024) { buf.pointer[i] = Float(i & 7) }
        let p = UnsafePointer(buf.pointer)
        let chunks = pool.threadCount * 16
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
        defer { sums.deallocate() }
        let readTime = best(reps: 4) {
            pool.forEachChunk(chunks) { c in
                sums[c] = sumFloats(p + count / chunks * c, count / chunks)
            }
        }
        precondition(sums[0].isFinite)
        let iters = 2_000_000
        let threads = pool.threadCount
        let fmaTime = best(reps: 3) {
            pool.forEachChunk(threads) { c in sums[c] = fmaLoop(iters, seed: Float(c)) }
        }
        let int8Time = best(reps: 3) {
            pool.forEachChunk(threads) { c in sums[c] = Float(pagoda_int8_dot_loop(Int64(iters), Int32(c))) }
        }
        let tileIters = 200_000
        let tileTime = best(reps: 3) {
            pool.forEachChunk(threads) { c in sums[c] = Float(pagoda_bf16_tile_loop(Int64(tileIters))) }
        }
        // fmaLoop: 12 chains × 16 lanes × 2 flops per iteration; the int8 loop: 12 instructions of 64 MACs.
        return Peaks(threads: threads,
                     readGBs: Double(count * 4) / readTime / 1e9,
                     fp32GFLOPs: Double(threads * iters * 12 * 16 * 2) / fmaTime / 1e9,
                     int8GOPs: Double(threads * iters) * Double(pagoda_int8_dot_loop_ops()) / int8Time / 1e9,
                     bf16TileGFLOPs: Double(threads * tileIters) * Double(pagoda_bf16_tile_loop_ops()) / tileTime / 1e9)
    }

    @inline(never) static func sumFloats(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        typealias V = SIMD16<Float>
        var a = V(), b = V(), c = V(), d = V()
        var i = 0
        while i + 64 <= n {
            a += UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
            b += UnsafeRawPointer(p + i + 16).loadUnaligned(as: V.self)
            c += UnsafeRawPointer(p + i + 32).loadUnaligned(as: V.self)
            d += UnsafeRawPointer(p + i + 48).loadUnaligned(as: V.self)
            i += 64
        }
        return (a + b + c + d).sum()
    }

    @inline(never) static func fmaLoop(_ iters: Int, seed: Float) -> Float {
        typealias V = SIMD16<Float>
        let m = V(repeating: 0.999_999), k = V(repeating: 1e-7)
        var a0 = V(repeating: seed), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5
        var a6 = a0 + 6, a7 = a0 + 7, a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11
        for _ in 0..<iters {
            a0 = k.addingProduct(a0, m); a1 = k.addingProduct(a1, m); a2 = k.addingProduct(a2, m)
            a3 = k.addingProduct(a3, m); a4 = k.addingProduct(a4, m); a5 = k.addingProduct(a5, m)
            a6 = k.addingProduct(a6, m); a7 = k.addingProduct(a7, m); a8 = k.addingProduct(a8, m)
            a9 = k.addingProduct(a9, m); a10 = k.addingProduct(a10, m); a11 = k.addingProduct(a11, m)
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).sum()
    }

    /// Runs every op and returns the results (and the peaks they are rated against).
    public static func run(shapes s: Shapes, pool: ThreadPool, dtypes: [DType], batch: Int = 64, prompt: Int = 512,
                           context: Int = 512, log: (String) -> Void = { _ in }) -> (Peaks, [Result]) {
        let peaks = measurePeaks(pool: pool)
        log(String(format: "peaks on %d threads: read %.1f GB/s, fp32 %.0f GFLOP/s, int8 %.0f GOP/s, bf16 tiles %.0f GFLOP/s",
                   peaks.threads, peaks.readGBs, peaks.fp32GFLOPs, peaks.int8GOPs, peaks.bf16TileGFLOPs))
        var results: [Result] = []
        func add(_ r: Result) {
            results.append(r)
            log(String(format: "%-22@ %-5@ %-22@ %10.1f us %8.1f GOP/s %7.1f GB/s %5.1f%% of %@", r.op, r.dtype, r.shape,
                       r.microseconds, r.gops, r.gbs, r.percentOfPeak, r.bound))
        }
        let shapesToRun: [(String, Int, Int)] = [("ffn_up", s.intermediate, s.hidden), ("ffn_down", s.hidden, s.intermediate),
                                                 ("lm_head", s.vocab, s.hidden)]
        for dtype in dtypes {
            for (name, rows, cols) in shapesToRun {
                if name == "lm_head" && dtype != .q8_0 && dtype != .f32 { continue }  // tied heads stay Q8_0 here
                guard cols % dtype.blockSize == 0 else { continue }
                let w = Tensor.random(dtype, rows: rows, cols: cols, seed: UInt64(rows * 31 + cols))
                let linear = Linear(w)
                let bytes = linear.weightBytes
                // A GEMV reads its weights from DRAM in a real step (the model is larger than the caches):
                // rotate over copies that together exceed the last-level cache.
                let copies = [linear] + (1..<max(1, (256 << 20) / bytes)).map { _ in Linear(w) }
                for tokens in [1, batch, prompt] where !(name == "lm_head" && tokens == prompt) {
                    let x = FloatBuffer(Tensor.randomActivations(tokens * cols, seed: 7))
                    let y = FloatBuffer(count: tokens * rows)
                    let qx = QuantizedActivations()
                    let quantized = linear.quantized != nil
                    let rotation = tokens == 1 ? copies : [linear]
                    let t = best(reps: tokens == 1 ? 3 : 5) {
                        for l in rotation {
                            if quantized { qx.quantize(x.pointer, tokens: tokens, cols: cols, pool: pool) }
                            l(x.pointer, tokens: tokens, into: y.pointer, qx: qx, pool: pool)
                        }
                    } / Double(rotation.count)
                    let ops = 2 * Double(rows * cols * tokens)
                    let gops = ops / t / 1e9, gbs = Double(bytes) / t / 1e9
                    let computePeak = quantized ? peaks.int8GOPs : peaks.fp32GFLOPs
                    let memoryBound = tokens == 1
                    add(Result(op: tokens == 1 ? "gemv \(name)" : "gemm \(name)", dtype: "\(dtype)",
                               shape: "\(rows)x\(cols) t=\(tokens)", microseconds: t * 1e6, gops: gops, gbs: gbs,
                               percentOfPeak: 100 * (memoryBound ? gbs / peaks.readGBs : gops / computePeak),
                               bound: memoryBound ? "read GB/s" : (quantized ? "int8 GOP/s" : "fp32 GFLOP/s")))
                    // The wide product, as prompt tokens take it (bf16 activations and tiles).
                    if quantized && tokens > 1 && peaks.bf16TileGFLOPs > 0 {
                        let tw = best(reps: 5) {
                            qx.quantize(x.pointer, tokens: tokens, cols: cols, wideRows: tokens, pool: pool)
                            linear(x.pointer, tokens: tokens, into: y.pointer, qx: qx, pool: pool)
                        }
                        let gw = ops / tw / 1e9
                        add(Result(op: "gemm-wide \(name)", dtype: "\(dtype)", shape: "\(rows)x\(cols) t=\(tokens)",
                                   microseconds: tw * 1e6, gops: gw, gbs: Double(bytes) / tw / 1e9,
                                   percentOfPeak: 100 * gw / peaks.bf16TileGFLOPs, bound: "bf16 tile GFLOP/s"))
                    }
                }
            }
        }
        results += attention(shapes: s, pool: pool, peaks: peaks, batch: batch, prompt: prompt, context: context, add: add)
        results += elementwise(shapes: s, pool: pool, peaks: peaks, prompt: prompt, batch: batch, add: add)
        return (peaks, results)
    }

    /// Decode attention (`batch` sequences, one new token each over `context` cached tokens) and prefill
    /// attention (`prompt` tokens of one sequence, causal), for each KV-cache element type.
    static func attention(shapes s: Shapes, pool: ThreadPool, peaks: Peaks, batch: Int, prompt: Int, context: Int,
                          add: (Result) -> Void) -> [Result] {
        let blockSize = 16
        let kvDim = s.kvHeads * s.headDim, qDim = s.heads * s.headDim
        let perSeqBlocks = (max(context, prompt) + blockSize - 1) / blockSize
        let blocks = perSeqBlocks * max(batch, 1)
        let keys = Tensor.randomActivations(blocks * blockSize * kvDim, seed: 3)
        let values = Tensor.randomActivations(blocks * blockSize * kvDim, seed: 4)
        var out: [Result] = []
        let workspace = AttentionWorkspace()
        for dtype in KVCacheDType.allCases {
            guard dtype.supports(headDim: s.headDim, blockSize: blockSize) else { continue }
            let keyRun = dtype.runBytes(blockSize: blockSize, headDim: s.headDim, keys: true)
            let valueRun = dtype.runBytes(blockSize: blockSize, headDim: s.headDim, keys: false)
            // Page aligned, as the engine's KV cache is.
            let kb = UnsafeMutableRawPointer.allocate(byteCount: blocks * s.kvHeads * keyRun, alignment: 4096)
            let vb = UnsafeMutableRawPointer.allocate(byteCount: blocks * s.kvHeads * valueRun, alignment: 4096)
            defer { kb.deallocate(); vb.deallocate() }
            let kv = LayerKV(keys: kb, values: vb, dtype: dtype)
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    for row in 0..<blocks * blockSize {
                        kv.store(row: row, keys: k.baseAddress! + row * kvDim, values: v.baseAddress! + row * kvDim,
                                 kvHeads: s.kvHeads, headDim: s.headDim, blockSize: blockSize)
                    }
                }
            }
            // Decode: every sequence has its own blocks, scattered over the pool as they are in a server that has
            // run for a while (a fixed shuffle).
            do {
                let q = FloatBuffer(Tensor.randomActivations(batch * qDim, seed: 5))
                let o = FloatBuffer(count: batch * qDim)
                var order = Array(0..<blocks)
                var g = BenchRandom(seed: 7)
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(g.next() % UInt64(i + 1))) }
                let seqs = (0..<batch).map { b in
                    AttentionSequence(tokenStart: b, tokenCount: 1, startPosition: context - 1,
                                      blockTable: (0..<perSeqBlocks).map { Int32(order[b * perSeqBlocks + $0]) })
                }
                let t = best(reps: 5) {
                    pagedAttention(q: q.pointer, out: o.pointer, kv: kv, sequences: seqs, heads: s.heads,
                                   kvHeads: s.kvHeads, headDim: s.headDim, blockSize: blockSize, pool: pool,
                                   workspace: workspace)
                }
                let flops = Double(batch * context * s.heads * s.headDim * 4)
                let bytes = Double(batch * context * s.kvHeads * (keyRun + valueRun) / blockSize)
                let r = Result(op: "attention decode", dtype: "kv \(dtype)", shape: "\(batch) seqs x ctx \(context)",
                               microseconds: t * 1e6, gops: flops / t / 1e9, gbs: bytes / t / 1e9,
                               percentOfPeak: 100 * bytes / t / 1e9 / peaks.readGBs, bound: "read GB/s")
                add(r)
                out.append(r)
            }
            // Prefill: one sequence, causal over its own new tokens.
            do {
                let q = FloatBuffer(Tensor.randomActivations(prompt * qDim, seed: 6))
                let o = FloatBuffer(count: prompt * qDim)
                let seqs = [AttentionSequence(tokenStart: 0, tokenCount: prompt, startPosition: 0,
                                              blockTable: (0..<perSeqBlocks).map { Int32($0) })]
                let t = best(reps: 3) {
                    pagedAttention(q: q.pointer, out: o.pointer, kv: kv, sequences: seqs, heads: s.heads,
                                   kvHeads: s.kvHeads, headDim: s.headDim, blockSize: blockSize, pool: pool,
                                   workspace: workspace)
                }
                let pairs = Double(prompt * (prompt + 1) / 2)
                let flops = pairs * Double(s.heads * s.headDim * 4)
                let r = Result(op: "attention prefill", dtype: "kv \(dtype)", shape: "\(prompt) tokens causal",
                               microseconds: t * 1e6, gops: flops / t / 1e9, gbs: 0,
                               percentOfPeak: 100 * flops / t / 1e9 / peaks.fp32GFLOPs, bound: "fp32 GFLOP/s")
                add(r)
                out.append(r)
            }
        }
        return out
    }

    /// RMSNorm, activation quantization and SiLU·up over `prompt` rows.
    static func elementwise(shapes s: Shapes, pool: ThreadPool, peaks: Peaks, prompt: Int, batch: Int, add: (Result) -> Void) -> [Result] {
        let x = FloatBuffer(Tensor.randomActivations(prompt * s.intermediate, seed: 8))
        let u = FloatBuffer(Tensor.randomActivations(prompt * s.intermediate, seed: 9))
        let y = FloatBuffer(count: prompt * s.intermediate)
        let w = FloatBuffer([Float](repeating: 1, count: s.hidden))
        let qx = QuantizedActivations()
        var out: [Result] = []
        func record(_ op: String, _ shape: String, _ elements: Int, _ bytes: Int, _ body: () -> Void) {
            let t = best(reps: 5, body)
            let r = Result(op: op, dtype: "f32", shape: shape, microseconds: t * 1e6, gops: Double(elements) / t / 1e9,
                           gbs: Double(bytes) / t / 1e9, percentOfPeak: 100 * Double(bytes) / t / 1e9 / peaks.readGBs,
                           bound: "read GB/s")
            add(r)
            out.append(r)
        }
        record("rmsnorm", "\(prompt)x\(s.hidden)", prompt * s.hidden, prompt * s.hidden * 8) {
            rmsNorm(x.pointer, w.pointer, y.pointer, tokens: prompt, n: s.hidden, eps: 1e-5)
        }
        record("quantize q8 blocks", "\(prompt)x\(s.hidden)", prompt * s.hidden, prompt * s.hidden * 5) {
            qx.quantize(x.pointer, tokens: prompt, cols: s.hidden, pool: pool)
        }
        record("quantize q8 blocks", "\(batch)x\(s.hidden)", batch * s.hidden, batch * s.hidden * 5) {
            qx.quantize(x.pointer, tokens: batch, cols: s.hidden, pool: pool)
        }
        record("rmsnorm split", "\(batch)x\(s.hidden)", batch * s.hidden, batch * s.hidden * 8) {
            pool.parallelFor(batch) { r in
                rmsNorm(x.pointer + r.lowerBound * s.hidden, w.pointer, y.pointer + r.lowerBound * s.hidden, tokens: r.count, n: s.hidden, eps: 1e-5)
            }
        }
        record("fork/join", "empty", 1, 0) {
            for _ in 0..<1000 { pool.forEachChunk(pool.threadCount * 3) { _ in } }
        }
        record("silu*up", "\(prompt)x\(s.intermediate)", prompt * s.intermediate, prompt * s.intermediate * 12) {
            siluMul(x.pointer, u.pointer, y.pointer, count: prompt * s.intermediate)
        }
        return out
    }
}

extension Linear {
    /// Bytes of weights one multiplication reads.
    var weightBytes: Int { quantized?.byteCount ?? half?.byteCount ?? outFeatures * inFeatures * 4 }
}

extension Tensor {
    /// A random GGML tensor of `dtype` (`rows × cols`) with sane scales, for kernel tests and benchmarks:
    /// random code bytes, fp16 scales in 0.002…0.032 (and a negative min for types with one).
    public static func random(_ t: DType, rows: Int, cols: Int, seed: UInt64) -> Tensor {
        var g = BenchRandom(seed: seed)
        let rowBytes = t.byteCount(elements: cols)
        let buf = FloatBuffer(count: (rows * rowBytes + 3) / 4)
        let raw = UnsafeMutableRawPointer(buf.pointer)
        func h(_ v: Float) -> UInt16 { Float16(v).bitPattern }
        switch t {
        case .f32:
            for i in 0..<rows * cols { raw.storeBytes(of: (g.unit() - 0.5) * 0.1, toByteOffset: 4 * i, as: Float.self) }
        case .f16, .bf16:
            for i in 0..<rows * cols {
                let v = (g.unit() - 0.5) * 0.1
                let bits = t == .f16 ? h(v) : UInt16(truncatingIfNeeded: v.bitPattern >> 16)
                raw.storeBytes(of: bits, toByteOffset: 2 * i, as: UInt16.self)
            }
        default:
            for i in 0..<rows * rowBytes { raw.storeBytes(of: g.byte(), toByteOffset: i, as: UInt8.self) }
            for b in 0..<rows * cols / t.blockSize {
                let p = raw + b * t.blockBytes
                let d = 0.002 + 0.03 * g.unit()
                switch t {
                case .q4_0, .q5_0, .q8_0:
                    p.storeBytes(of: h(d), toByteOffset: 0, as: UInt16.self)
                case .q4_1, .q5_1:
                    p.storeBytes(of: h(d), toByteOffset: 0, as: UInt16.self)
                    p.storeBytes(of: h(-8 * d * (0.5 + g.unit())), toByteOffset: 2, as: UInt16.self)
                case .q4_K, .q5_K:
                    p.storeBytes(of: h(d / 16), toByteOffset: 0, as: UInt16.self)
                    p.storeBytes(of: h(d / 8), toByteOffset: 2, as: UInt16.self)
                case .q6_K:
                    p.storeBytes(of: h(d / 16), toByteOffset: t.blockBytes - 2, as: UInt16.self)
                default:
                    break
                }
            }
        }
        return Tensor(name: "random", dtype: t, shape: [rows, cols], data: UnsafeRawPointer(raw), owner: buf)
    }

    /// Random activations in [−2, 2) with a few outliers 20× larger (every 97th value).
    public static func randomActivations(_ n: Int, seed: UInt64) -> [Float] {
        var g = BenchRandom(seed: seed)
        return (0..<n).map { i in
            let v = (g.unit() - 0.5) * 4
            return i % 97 == 0 ? v * 20 : v
        }
    }
}

/// A small linear congruential generator for benchmark and test data.
struct BenchRandom {
    var s: UInt64
    init(seed: UInt64) { s = seed }
    mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 11 }
    mutating func unit() -> Float { Float(next() % 1_000_000) / 1_000_000 }  // [0, 1)
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}
