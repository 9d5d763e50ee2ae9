import Foundation

/// A linear layer y = x·Wᵀ + b with W stored [outFeatures, inFeatures].
///
/// Quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) stay quantized in a `QuantizedMatrix` and are
/// multiplied by int8-quantized activations; F16 and BF16 weights stay in the file's 16-bit form
/// (`HalfMatrix`, fp32 activations); other types (and every type when `fp32` is set) are dequantized to fp32
/// (`FloatMatrix`).
public struct Linear: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let weight: FloatMatrix?
    let quantized: QuantizedMatrix?
    let half: HalfMatrix?
    let bias: FloatBuffer?

    init(_ t: Tensor, bias b: Tensor? = nil, fp32: Bool = false) {
        outFeatures = t.rows
        inFeatures = t.columns
        var q: QuantizedMatrix?, h: HalfMatrix?, w: FloatMatrix?
        if !fp32, QuantizedMatrix.supportedTypes.contains(t.dtype), let m = try? QuantizedMatrix(t) {
            q = m
        } else if !fp32, let m = HalfMatrix(t) {
            h = m
        } else {
            w = FloatMatrix(t)
        }
        quantized = q
        half = h
        weight = w
        bias = b.map { FloatBuffer($0.toFloats()) }
    }

    var biasPointer: UnsafePointer<Float>? { bias.map { UnsafePointer($0.pointer) } }

    /// y = x·Wᵀ (+ b). `qx` must hold `x` quantized (see `quantizeInput`) when the layer is quantized.
    func callAsFunction(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>,
                        qx: QuantizedActivations, pool: ThreadPool) {
        let b = biasPointer
        if let quantized {
            precondition(qx.tokens == tokens && qx.cols == inFeatures, "Linear: stale quantized input")
            quantized.multiply(activations: qx, y: y, bias: b, pool: pool)
        } else if let half {
            half.multiply(x: x, tokens: tokens, y: y, bias: b, pool: pool)
        } else {
            weight!.multiply(x: x, tokens: tokens, y: y, bias: b, pool: pool)
        }
    }
}

extension Linear {
    /// residual += x·Wᵀ (+ b), through `scratch`. When the layer is quantized the add is fused into the
    /// multiply (`QuantizedMatrix.multiplyAdd`).
    func addProjection(_ x: UnsafePointer<Float>, tokens: Int, to residual: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, qx: QuantizedActivations, pool: ThreadPool) {
        let h = outFeatures
        if let m = quantized {
            precondition(qx.tokens == tokens && qx.cols == inFeatures, "Linear: stale quantized input")
            m.multiplyAdd(activations: qx, to: residual, scratch: scratch, bias: biasPointer, pool: pool)
        } else {
            self(x, tokens: tokens, into: scratch, qx: qx, pool: pool)
            addInPlace(residual, scratch, count: tokens * h)
        }
    }
}

/// Quantizes `x` into `qx` once for all the quantized layers among `layers` that read it (the first `wideRows`
/// rows as bf16, for the wide product).
func quantizeInput(_ x: UnsafePointer<Float>, tokens: Int, cols: Int, wideRows: Int = 0, for layers: Linear...,
                   into qx: QuantizedActivations, pool: ThreadPool) {
    if layers.contains(where: { $0.quantized != nil }) {
        qx.quantize(x, tokens: tokens, cols: cols, wideRows: wideRows, pool: pool)
    }
}

/// The token embedding table. Kept in the file's element type (a Q8_0 table is a quarter of its fp32 size) and
/// converted one row per looked-up token, with the same arithmetic as a whole-table conversion; fp32 only when
/// the file stores fp32 or the table must also serve as an fp32 LM head.
struct EmbeddingTable: @unchecked Sendable {
    let dtype: DType
    let columns: Int
    let rowBytes: Int
    /// The fp32 table, when kept as fp32: repacked for the LM head's product (`FloatMatrix`), rows read back from it.
    let floats: FloatMatrix?
    private let region: HugePageRegion?
    private let raw: UnsafeRawPointer?

    init(_ t: Tensor, fp32: Bool) {
        dtype = t.dtype
        columns = t.columns
        rowBytes = t.dtype.byteCount(elements: t.columns)
        if fp32 || t.dtype == .f32 || t.columns % t.dtype.blockSize != 0 {
            floats = FloatMatrix(t)
            region = nil
            raw = nil
        } else {
            let (r, p) = WeightMemory.allocate(byteCount: t.rows * rowBytes)
            p.copyMemory(from: t.data, byteCount: t.rows * rowBytes)
            floats = nil
            region = r
            raw = UnsafeRawPointer(p)
        }
    }

    /// Row `token` as fp32 into `dst[columns]`.
    func row(_ token: Int, into dst: UnsafeMutablePointer<Float>) {
        if let floats {
            floats.row(token, into: dst)
        } else {
            dequantize(dtype, raw! + token * rowBytes, dst, count: columns)
        }
    }
}

/// One flattened batch for a forward pass: the new tokens of several sequences, back to back.
public struct ForwardBatch: Sendable {
    public var tokens: [Int32]
    public var positions: [Int32]
    public var sequences: [AttentionSequence]
    /// Rows of the batch (indices into `tokens`) whose logits are wanted, in output order.
    public var logitRows: [Int]
    /// How many leading rows are prompt tokens that the quantized matrices multiply with the wide product
    /// (`QuantizedMatrix.wideAvailable`; ignored where it is not available); the rows after take the int8
    /// kernels. A sequence's wide rows come before its other rows (so its earlier positions are computed first).
    public var wideRows: Int

    public init(tokens: [Int32], positions: [Int32], sequences: [AttentionSequence], logitRows: [Int],
                wideRows: Int = 0) {
        self.tokens = tokens
        self.positions = positions
        self.sequences = sequences
        self.logitRows = logitRows
        self.wideRows = min(max(wideRows, 0), tokens.count)
    }
}

extension ForwardBatch {
    /// One slice of a batch: its sequences as a batch of their own, and for each of its logit rows, the
    /// position of that row in the whole batch's output.
    struct Slice {
        var batch: ForwardBatch
        var outputRows: [Int]
    }

    /// Consecutive runs of the batch's sequences of at most `maxTokens` new tokens each (a longer sequence
    /// alone); the whole batch when it fits, or when its sequences do not tile its tokens in order.
    static func slices(of batch: ForwardBatch, maxTokens: Int) -> [Slice] {
        let whole = [Slice(batch: batch, outputRows: Array(batch.logitRows.indices))]
        if batch.tokens.count <= maxTokens || batch.sequences.count < 2 { return whole }
        var next = 0
        for s in batch.sequences {
            if s.tokenStart != next { return whole }
            next += s.tokenCount
        }
        if next != batch.tokens.count { return whole }
        // Runs of sequences: [first, end) index ranges.
        var runs: [Range<Int>] = []
        var first = 0, tokens = 0
        for (i, s) in batch.sequences.enumerated() {
            if i > first && tokens + s.tokenCount > maxTokens {
                runs.append(first..<i)
                first = i
                tokens = 0
            }
            tokens += s.tokenCount
        }
        runs.append(first..<batch.sequences.count)
        return runs.map { run in
            let start = batch.sequences[run.lowerBound].tokenStart
            let last = batch.sequences[run.upperBound - 1]
            let end = last.tokenStart + last.tokenCount
            var seqs = Array(batch.sequences[run])
            for i in seqs.indices { seqs[i].tokenStart -= start }
            var rows: [Int] = [], outputRows: [Int] = []
            for (o, r) in batch.logitRows.enumerated() where r >= start && r < end {
                rows.append(r - start)
                outputRows.append(o)
            }
            return Slice(batch: ForwardBatch(tokens: Array(batch.tokens[start..<end]),
                                             positions: Array(batch.positions[start..<end]),
                                             sequences: seqs, logitRows: rows, wideRows: batch.wideRows - start),
                         outputRows: outputRows)
        }
    }
}

struct LlamaLayer: Sendable {
    let attnNorm: FloatBuffer
    let wq: Linear, wk: Linear, wv: Linear, wo: Linear
    let qNorm: FloatBuffer?, kNorm: FloatBuffer?
    let ffnNorm: FloatBuffer
    let gate: Linear, up: Linear, down: Linear
}

/// The Llama-family decoder (Llama 2/3, SmolLM, Mistral, Qwen2 with QKV bias, Qwen3 with Q/K RMSNorm):
/// embeddings → N × (RMSNorm, GQA attention with RoPE, residual, RMSNorm, SwiGLU MLP, residual) → RMSNorm → LM head.
public final class LlamaModel: Sendable {
    public let config: ModelConfig
    let embedding: EmbeddingTable
    let layers: [LlamaLayer]
    let outputNorm: FloatBuffer
    let lmHead: Linear?
    let invFreq: FloatBuffer

    /// Whether the weights were loaded as fp32 (the reference path) rather than quantized.
    public let fp32Weights: Bool

    /// Whether the layers multiply quantized matrices (by int8 activations) rather than fp32 or 16-bit ones.
    public var hasQuantizedMatrices: Bool { layers.first?.wq.quantized != nil }

    /// Prompts of at least this many tokens take the wide product for their prompt tokens: a shorter one would pay
    /// for dequantizing every matrix to bf16 (about 8 times an int8 pass over one token) for a few rows.
    public static let widePromptMinimum = 16

    /// How many leading tokens of a sequence whose prompt has `promptLength` tokens the wide product computes
    /// (`ForwardBatch.wideRows`): every prompt token when the matrices are quantized, the machine has the wide
    /// product and the prompt is long enough; else none. Generated tokens always take the int8 kernels (decode
    /// streams the quantized weights, which only they can do at that speed). The count depends on the sequence
    /// alone, so each token is computed the same way in any batch, after a preemption and from the prefix cache.
    public func wideTokenCount(promptLength: Int) -> Int {
        hasQuantizedMatrices && QuantizedMatrix.wideAvailable && promptLength >= Self.widePromptMinimum ? promptLength : 0
    }

    /// `fp32Weights` forces the fp32 reference path for every matrix; by default it is taken from the
    /// environment variable `PAGODA_FP32_WEIGHTS=1`.
    public init(config c: ModelConfig, weights w: WeightStore, fp32Weights: Bool? = nil) throws {
        config = c
        let fp32 = fp32Weights ?? (ProcessInfo.processInfo.environment["PAGODA_FP32_WEIGHTS"] == "1")
        self.fp32Weights = fp32
        let h = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let embd = try w.require("token_embd.weight", shape: [c.vocabSize, h])
        outputNorm = FloatBuffer(try w.require("output_norm.weight", shape: [h]).toFloats())
        if let out = w.optional("output.weight") {
            _ = try w.require("output.weight", shape: [c.vocabSize, h])
            lmHead = Linear(out, fp32: fp32)
        } else if !fp32, QuantizedMatrix.supportedTypes.contains(embd.dtype) || HalfMatrix.supportedTypes.contains(embd.dtype) {
            lmHead = Linear(embd)  // tied: the quantized (or 16-bit) embedding table is the LM head
        } else {
            lmHead = nil
        }
        // Without an LM head of its own the table is the fp32 head: keep it as fp32.
        embedding = EmbeddingTable(embd, fp32: lmHead == nil)
        var layers: [LlamaLayer] = []
        for i in 0..<c.layerCount {
            func t(_ n: String, _ shape: [Int]) throws -> Tensor { try w.require("blk.\(i).\(n)", shape: shape) }
            func opt(_ n: String, _ shape: [Int]) throws -> Tensor? {
                w.optional("blk.\(i).\(n)") == nil ? nil : try t(n, shape)
            }
            layers.append(LlamaLayer(
                attnNorm: FloatBuffer(try t("attn_norm.weight", [h]).toFloats()),
                wq: Linear(try t("attn_q.weight", [qDim, h]), bias: try opt("attn_q.bias", [qDim]), fp32: fp32),
                wk: Linear(try t("attn_k.weight", [kvDim, h]), bias: try opt("attn_k.bias", [kvDim]), fp32: fp32),
                wv: Linear(try t("attn_v.weight", [kvDim, h]), bias: try opt("attn_v.bias", [kvDim]), fp32: fp32),
                wo: Linear(try t("attn_output.weight", [h, qDim]), bias: try opt("attn_output.bias", [h]), fp32: fp32),
                qNorm: try opt("attn_q_norm.weight", [c.headDim]).map { FloatBuffer($0.toFloats()) },
                kNorm: try opt("attn_k_norm.weight", [c.headDim]).map { FloatBuffer($0.toFloats()) },
                ffnNorm: FloatBuffer(try t("ffn_norm.weight", [h]).toFloats()),
                gate: Linear(try t("ffn_gate.weight", [c.intermediateSize, h]), fp32: fp32),
                up: Linear(try t("ffn_up.weight", [c.intermediateSize, h]), fp32: fp32),
                down: Linear(try t("ffn_down.weight", [h, c.intermediateSize]), fp32: fp32)))
        }
        self.layers = layers
        var freqs = c.inverseFrequencies()
        // llama.cpp stores Llama 3 RoPE scaling as per-frequency divisors.
        if let factors = w.optional("rope_freqs.weight")?.toFloats(), factors.count == freqs.count {
            for i in freqs.indices { freqs[i] /= factors[i] }
        }
        invFreq = FloatBuffer(freqs)
    }

    /// Activation buffers reused across forward passes (one per concurrent caller).
    private let workspaceLock = NSLock()
    private nonisolated(unsafe) var idleWorkspaces: [ForwardWorkspace] = []

    private func borrowWorkspace() -> ForwardWorkspace {
        workspaceLock.lock()
        defer { workspaceLock.unlock() }
        return idleWorkspaces.popLast() ?? ForwardWorkspace()
    }

    private func returnWorkspace(_ w: ForwardWorkspace) {
        workspaceLock.lock()
        idleWorkspaces.append(w)
        workspaceLock.unlock()
    }

    /// Tokens per pass through the layers: a larger batch is run as consecutive slices of whole sequences, so
    /// each slice's activations (gate and up alone are 12 KiB a token here) stay in the caches between the ops
    /// of a layer. A sequence is never split: one with more new tokens than this is a slice of its own.
    public static let sliceTokens = 1024

    /// Runs the batch: writes its keys and values into `cache` and returns the logits of `batch.logitRows`,
    /// `[logitRows.count × vocabSize]`. Sequences are independent (attention reads only a sequence's own
    /// cache), so slicing the batch changes no arithmetic: every result is the same as in one pass.
    public func forward(_ batch: ForwardBatch, cache: KVCacheStorage, pool: ThreadPool,
                        sliceTokens: Int = LlamaModel.sliceTokens) -> [Float] {
        let slices = ForwardBatch.slices(of: batch, maxTokens: sliceTokens)
        if slices.count == 1 { return forwardSlice(batch, cache: cache, pool: pool) }
        let vocab = config.vocabSize
        var logits = [Float](repeating: 0, count: batch.logitRows.count * vocab)
        for slice in slices {
            let part = forwardSlice(slice.batch, cache: cache, pool: pool)
            for (i, outRow) in slice.outputRows.enumerated() {
                logits.replaceSubrange(outRow * vocab..<(outRow + 1) * vocab, with: part[i * vocab..<(i + 1) * vocab])
            }
        }
        return logits
    }

    private func forwardSlice(_ batch: ForwardBatch, cache: KVCacheStorage, pool: ThreadPool) -> [Float] {
        let c = config
        let n = batch.tokens.count
        let h = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let inter = c.intermediateSize
        let ws = borrowWorkspace()
        defer { returnWorkspace(ws) }
        ws.reserve(tokens: max(n, batch.logitRows.count), config: c)
        let x = ws.x, xn = ws.xn, q = ws.q, k = ws.k, v = ws.v, attn = ws.attn, tmp = ws.tmp, g = ws.g, u = ws.u
        let qx = ws.qx
        // Prompt rows take the wide product where it exists (the rows' role, never the batch, decides).
        let wide = QuantizedMatrix.wideAvailable ? batch.wideRows : 0
        let prof = ForwardProfile.enabled
        var clock = prof ? ForwardProfile.now() : 0
        @inline(__always) func mark(_ op: ForwardProfile.Op) {
            if prof { let t = ForwardProfile.now(); ForwardProfile.add(op, t - clock); clock = t }
        }

        for (i, tok) in batch.tokens.enumerated() {
            precondition(Int(tok) >= 0 && Int(tok) < c.vocabSize, "token id \(tok) out of range")
            embedding.row(Int(tok), into: x + i * h)
        }
        // Slot of each new token in the paged cache.
        var slots = [Int](repeating: 0, count: n)
        for s in batch.sequences {
            for t in 0..<s.tokenCount {
                let pos = s.startPosition + t
                slots[s.tokenStart + t] = Int(s.blockTable[pos / cache.blockSize]) * cache.blockSize + pos % cache.blockSize
            }
        }
        // RoPE cos/sin of every token's position, once for all layers.
        batch.positions.withUnsafeBufferPointer { positions in
            ropeTables(positions: positions.baseAddress!, tokens: n, invFreq: invFreq.pointer, half: c.headDim / 2,
                       cos: ws.ropeCos, sin: ws.ropeSin)
        }
        mark(.other)
        // Per-token ops (norms, RoPE, cache writes) split over the threads for large batches: each token is
        // computed the same way whichever thread takes it.
        @inline(__always) func perToken(_ body: (Range<Int>) -> Void) {
            if n >= 32 { pool.parallelFor(n, body) } else { body(0..<n) }
        }
        /// xn = RMSNorm(x) with `weight`, and xn quantized into `qx` for `layers` when any is quantized (each
        /// thread quantizes the tokens it normalized, while they are in its cache).
        func normalize(with weight: FloatBuffer, for layers: Linear...) {
            let quantize = layers.contains { $0.quantized != nil }
            if quantize { qx.prepare(tokens: n, cols: h, wideRows: wide) }
            func body(_ r: Range<Int>) {
                rmsNorm(x + r.lowerBound * h, weight.pointer, xn + r.lowerBound * h, tokens: r.count, n: h, eps: c.rmsNormEps)
                if quantize { qx.quantizeRows(xn + r.lowerBound * h, rows: r) }
            }
            // Split from the token count `QuantizedActivations.quantize` splits at.
            if n >= QuantizedActivations.parallelTokens { pool.parallelFor(n, body) } else { body(0..<n) }
        }
        let half = c.headDim / 2
        for (li, layer) in layers.enumerated() {
            normalize(with: layer.attnNorm, for: layer.wq, layer.wk, layer.wv)
            mark(.norm)
            if let mq = layer.wq.quantized, let mk = layer.wk.quantized, let mv = layer.wv.quantized {
                QuantizedMatrix.multiplyMany([.init(mq, y: q, bias: layer.wq.biasPointer),
                                              .init(mk, y: k, bias: layer.wk.biasPointer),
                                              .init(mv, y: v, bias: layer.wv.biasPointer)], activations: qx, pool: pool)
            } else {
                layer.wq(xn, tokens: n, into: q, qx: qx, pool: pool)
                layer.wk(xn, tokens: n, into: k, qx: qx, pool: pool)
                layer.wv(xn, tokens: n, into: v, qx: qx, pool: pool)
            }
            mark(.qkv)
            let kvLayer = cache.layers[li]
            slots.withUnsafeBufferPointer { slots in
                func body(_ r: Range<Int>) {
                    let qr = q + r.lowerBound * qDim, kr = k + r.lowerBound * kvDim
                    if let qn = layer.qNorm, let kn = layer.kNorm {
                        rmsNorm(qr, qn.pointer, qr, tokens: r.count * c.headCount, n: c.headDim, eps: c.rmsNormEps)
                        rmsNorm(kr, kn.pointer, kr, tokens: r.count * c.kvHeadCount, n: c.headDim, eps: c.rmsNormEps)
                    }
                    let cosT = ws.ropeCos + r.lowerBound * half, sinT = ws.ropeSin + r.lowerBound * half
                    applyRope(qr, tokens: r.count, heads: c.headCount, headDim: c.headDim, stride: qDim,
                              cos: cosT, sin: sinT, style: c.ropeStyle)
                    applyRope(kr, tokens: r.count, heads: c.kvHeadCount, headDim: c.headDim, stride: kvDim,
                              cos: cosT, sin: sinT, style: c.ropeStyle)
                    for t in r {
                        kvLayer.store(row: slots[t], keys: k + t * kvDim, values: v + t * kvDim, kvHeads: c.kvHeadCount,
                                      headDim: c.headDim, blockSize: cache.blockSize)
                    }
                }
                // Split even for a few tokens (not only from `perToken`'s 32): each token's transposed keys go to
                // a different cache line per dimension (a miss each, usually to DRAM), so the writes are latency bound.
                pool.parallelFor(n, body)
            }
            mark(.rope)
            pagedAttention(q: q, out: attn, kv: kvLayer, sequences: batch.sequences,
                           heads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim,
                           blockSize: cache.blockSize, pool: pool, workspace: ws.attention)
            mark(.attention)
            quantizeInput(attn, tokens: n, cols: qDim, wideRows: wide, for: layer.wo, into: qx, pool: pool)
            layer.wo.addProjection(attn, tokens: n, to: x, scratch: tmp, qx: qx, pool: pool)
            mark(.oProj)
            normalize(with: layer.ffnNorm, for: layer.gate, layer.up)
            mark(.norm)
            if let mg = layer.gate.quantized, let mu = layer.up.quantized, layer.gate.biasPointer == nil,
               layer.up.biasPointer == nil {
                // SwiGLU in one region: prompt rows fused in the wide kernel, the others combined per thread.
                QuantizedMatrix.multiplyGLU(gate: mg, up: mu, activations: qx, out: g, scratch: u, pool: pool)
            } else if let mg = layer.gate.quantized, let mu = layer.up.quantized {
                // gate and up in one region, SiLU(gate)·up fused: each thread combines the rows it computed.
                QuantizedMatrix.multiplyMany([.init(mg, y: g), .init(mu, y: u)], activations: qx, pool: pool) { rows in
                    for t in 0..<n {
                        let o = t * inter + rows.lowerBound
                        siluMul(g + o, u + o, g + o, count: rows.count)
                    }
                }
            } else {
                layer.gate(xn, tokens: n, into: g, qx: qx, pool: pool)
                layer.up(xn, tokens: n, into: u, qx: qx, pool: pool)
                perToken { r in
                    let o = r.lowerBound * inter
                    siluMul(g + o, u + o, g + o, count: r.count * inter)
                }
            }
            mark(.gateUp)
            quantizeInput(g, tokens: n, cols: inter, wideRows: wide, for: layer.down, into: qx, pool: pool)
            layer.down.addProjection(g, tokens: n, to: x, scratch: tmp, qx: qx, pool: pool)
            mark(.down)
        }
        let m = batch.logitRows.count
        if m == 0 { return [] }
        let sel = ws.xn
        for (i, row) in batch.logitRows.enumerated() {
            (sel + i * h).update(from: x + row * h, count: h)
        }
        rmsNorm(sel, outputNorm.pointer, sel, tokens: m, n: h, eps: c.rmsNormEps)
        let logits = [Float](unsafeUninitializedCapacity: m * c.vocabSize) { out, count in
            if let head = lmHead {
                quantizeInput(sel, tokens: m, cols: h, for: head, into: qx, pool: pool)
                head(sel, tokens: m, into: out.baseAddress!, qx: qx, pool: pool)
            } else {
                embedding.floats!.multiply(x: sel, tokens: m, y: out.baseAddress!, bias: nil, pool: pool)
            }
            count = m * c.vocabSize
        }
        mark(.lmHead)
        if prof { ForwardProfile.endForward(tokens: n, decodeOnly: n == batch.sequences.count) }
        return logits
    }
}

/// The activation buffers of a forward pass, grown to the largest batch seen.
final class ForwardWorkspace: @unchecked Sendable {
    private(set) var tokens = 0
    private var buffers: [UnsafeMutablePointer<Float>] = []
    var x: UnsafeMutablePointer<Float> { buffers[0] }
    var xn: UnsafeMutablePointer<Float> { buffers[1] }
    var q: UnsafeMutablePointer<Float> { buffers[2] }
    var k: UnsafeMutablePointer<Float> { buffers[3] }
    var v: UnsafeMutablePointer<Float> { buffers[4] }
    var attn: UnsafeMutablePointer<Float> { buffers[5] }
    var tmp: UnsafeMutablePointer<Float> { buffers[6] }
    var g: UnsafeMutablePointer<Float> { buffers[7] }
    var u: UnsafeMutablePointer<Float> { buffers[8] }
    var ropeCos: UnsafeMutablePointer<Float> { buffers[9] }
    var ropeSin: UnsafeMutablePointer<Float> { buffers[10] }
    let qx = QuantizedActivations()
    let attention = AttentionWorkspace()

    func reserve(tokens n: Int, config c: ModelConfig) {
        if n <= tokens { return }
        let cap = max(n, tokens * 2, 1)
        for b in buffers { b.deallocate() }
        let h = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let widths = [h, h, qDim, kvDim, kvDim, qDim, h, c.intermediateSize, c.intermediateSize,
                      c.headDim / 2, c.headDim / 2]
        buffers = widths.map { w in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, cap * w) * 4, alignment: 64)
            let p = raw.bindMemory(to: Float.self, capacity: max(1, cap * w))
            p.initialize(repeating: 0, count: max(1, cap * w))
            return p
        }
        tokens = cap
    }

    deinit { for b in buffers { b.deallocate() } }
}

/// The per-op profile of the forward passes since the last call (see `ForwardProfile`), or nil when
/// `PAGODA_PROFILE=1` is not set.
public func takeForwardProfile() -> String? {
    ForwardProfile.enabled ? ForwardProfile.report() : nil
}

/// Per-op wall time of `forward`, enabled by `PAGODA_PROFILE=1` (single caller; for benchmarks). Forwards
/// where every sequence brings one token (pure decode steps) are reported apart from those carrying prompt
/// tokens, whose cost per forward is of another order.
enum ForwardProfile {
    enum Op: Int, CaseIterable { case other, norm, qkv, rope, attention, oProj, gateUp, down, lmHead }
    static let enabled = ProcessInfo.processInfo.environment["PAGODA_PROFILE"] == "1"
    /// Per op, the nanoseconds of the current forward, added to one of the two kinds at its end.
    nonisolated(unsafe) static var current = [UInt64](repeating: 0, count: Op.allCases.count)
    nonisolated(unsafe) static var kinds = [Totals(), Totals()]

    struct Totals {
        var ns = [UInt64](repeating: 0, count: Op.allCases.count)
        var forwards = 0
        var tokens = 0
    }

    @inline(__always) static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
    static func add(_ op: Op, _ ns: UInt64) { current[op.rawValue] += ns }
    static func endForward(tokens n: Int, decodeOnly: Bool) {
        let k = decodeOnly ? 0 : 1
        for i in current.indices { kinds[k].ns[i] += current[i] }
        kinds[k].forwards += 1
        kinds[k].tokens += n
        current = [UInt64](repeating: 0, count: Op.allCases.count)
    }

    /// One line per kind of forward seen (ms per forward for each op), and resets the counters.
    public static func report() -> String {
        let lines = zip(["decode", "prefill"], kinds).compactMap { name, t -> String? in
            if t.forwards == 0 { return nil }
            let f = Double(t.forwards)
            let parts = Op.allCases.map { String(format: "%@ %.3f", "\($0)", Double(t.ns[$0.rawValue]) / 1e6 / f) }
            let total = Double(t.ns.reduce(0, +)) / 1e6 / f
            return "profile \(name) (ms per forward, \(t.forwards) forwards, \(t.tokens) tokens): "
                + parts.joined(separator: ", ") + String(format: ", total %.3f", total)
        }
        kinds = [Totals(), Totals()]
        return lines.joined(separator: "\n")
    }
}
