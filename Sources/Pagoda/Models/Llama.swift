import Foundation

/// A linear layer y = x·Wᵀ + b with W stored [outFeatures, inFeatures].
///
/// Quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K) stay quantized in a `QuantizedMatrix` and are
/// multiplied by int8-quantized activations; other types (and every type when `fp32` is set) are
/// dequantized to fp32 and use `matmulF32`.
public struct Linear: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let weight: FloatBuffer?
    let quantized: QuantizedMatrix?
    let bias: FloatBuffer?

    init(_ t: Tensor, bias b: Tensor? = nil, fp32: Bool = false) {
        outFeatures = t.rows
        inFeatures = t.columns
        if !fp32, QuantizedMatrix.supportedTypes.contains(t.dtype), let q = try? QuantizedMatrix(t) {
            quantized = q
            weight = nil
        } else {
            quantized = nil
            weight = FloatBuffer(t.toFloats())
        }
        bias = b.map { FloatBuffer($0.toFloats()) }
    }

    /// y = x·Wᵀ (+ b). `qx` must hold `x` quantized (see `quantizeInput`) when the layer is quantized.
    func callAsFunction(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>,
                        qx: QuantizedActivations, pool: ThreadPool) {
        let b = bias.map { UnsafePointer($0.pointer) }
        if let quantized {
            precondition(qx.tokens == tokens && qx.cols == inFeatures, "Linear: stale quantized input")
            quantized.multiply(activations: qx, y: y, bias: b, pool: pool)
        } else {
            matmulF32(x: x, tokens: tokens, w: weight!.pointer, rows: outFeatures, cols: inFeatures, bias: b, y: y, pool: pool)
        }
    }
}

/// Quantizes `x` into `qx` once for all the quantized layers among `layers` that read it.
func quantizeInput(_ x: UnsafePointer<Float>, tokens: Int, cols: Int, for layers: Linear..., into qx: QuantizedActivations,
                   pool: ThreadPool) {
    if layers.contains(where: { $0.quantized != nil }) { qx.quantize(x, tokens: tokens, cols: cols, pool: pool) }
}

/// One flattened batch for a forward pass: the new tokens of several sequences, back to back.
public struct ForwardBatch: Sendable {
    public var tokens: [Int32]
    public var positions: [Int32]
    public var sequences: [AttentionSequence]
    /// Rows of the batch (indices into `tokens`) whose logits are wanted, in output order.
    public var logitRows: [Int]

    public init(tokens: [Int32], positions: [Int32], sequences: [AttentionSequence], logitRows: [Int]) {
        self.tokens = tokens
        self.positions = positions
        self.sequences = sequences
        self.logitRows = logitRows
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
    let embedding: FloatBuffer
    let layers: [LlamaLayer]
    let outputNorm: FloatBuffer
    let lmHead: Linear?
    let invFreq: FloatBuffer

    /// Whether the weights were loaded as fp32 (the reference path) rather than quantized.
    public let fp32Weights: Bool

    /// `fp32Weights` forces the fp32 reference path for every matrix; by default it is taken from the
    /// environment variable `PAGODA_FP32_WEIGHTS=1`.
    public init(config c: ModelConfig, weights w: WeightStore, fp32Weights: Bool? = nil) throws {
        config = c
        let fp32 = fp32Weights ?? (ProcessInfo.processInfo.environment["PAGODA_FP32_WEIGHTS"] == "1")
        self.fp32Weights = fp32
        let h = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let embd = try w.require("token_embd.weight", shape: [c.vocabSize, h])
        embedding = FloatBuffer(embd.toFloats())
        outputNorm = FloatBuffer(try w.require("output_norm.weight", shape: [h]).toFloats())
        if let out = w.optional("output.weight") {
            _ = try w.require("output.weight", shape: [c.vocabSize, h])
            lmHead = Linear(out, fp32: fp32)
        } else if !fp32, QuantizedMatrix.supportedTypes.contains(embd.dtype) {
            lmHead = Linear(embd)  // tied: the quantized embedding table is the LM head
        } else {
            lmHead = nil
        }
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

    /// Runs the batch: writes its keys and values into `cache` and returns the logits of `batch.logitRows`,
    /// `[logitRows.count × vocabSize]`.
    public func forward(_ batch: ForwardBatch, cache: KVCacheStorage, pool: ThreadPool) -> [Float] {
        let c = config
        let n = batch.tokens.count
        let h = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let x = FloatBuffer(count: n * h), xn = FloatBuffer(count: n * h)
        let q = FloatBuffer(count: n * qDim), k = FloatBuffer(count: n * kvDim), v = FloatBuffer(count: n * kvDim)
        let attn = FloatBuffer(count: n * qDim), tmp = FloatBuffer(count: n * h)
        let g = FloatBuffer(count: n * c.intermediateSize), u = FloatBuffer(count: n * c.intermediateSize)
        let qx = QuantizedActivations()

        for (i, tok) in batch.tokens.enumerated() {
            precondition(Int(tok) >= 0 && Int(tok) < c.vocabSize, "token id \(tok) out of range")
            (x.pointer + i * h).update(from: embedding.pointer + Int(tok) * h, count: h)
        }
        // Slot of each new token in the paged cache.
        var slots = [Int](repeating: 0, count: n)
        for s in batch.sequences {
            for t in 0..<s.tokenCount {
                let pos = s.startPosition + t
                slots[s.tokenStart + t] = Int(s.blockTable[pos / cache.blockSize]) * cache.blockSize + pos % cache.blockSize
            }
        }
        batch.positions.withUnsafeBufferPointer { positions in
            for (li, layer) in layers.enumerated() {
                rmsNorm(x.pointer, layer.attnNorm.pointer, xn.pointer, tokens: n, n: h, eps: c.rmsNormEps)
                quantizeInput(xn.pointer, tokens: n, cols: h, for: layer.wq, layer.wk, layer.wv, into: qx, pool: pool)
                layer.wq(xn.pointer, tokens: n, into: q.pointer, qx: qx, pool: pool)
                layer.wk(xn.pointer, tokens: n, into: k.pointer, qx: qx, pool: pool)
                layer.wv(xn.pointer, tokens: n, into: v.pointer, qx: qx, pool: pool)
                if let qn = layer.qNorm, let kn = layer.kNorm {
                    rmsNorm(q.pointer, qn.pointer, q.pointer, tokens: n * c.headCount, n: c.headDim, eps: c.rmsNormEps)
                    rmsNorm(k.pointer, kn.pointer, k.pointer, tokens: n * c.kvHeadCount, n: c.headDim, eps: c.rmsNormEps)
                }
                applyRope(q.pointer, tokens: n, heads: c.headCount, headDim: c.headDim, stride: qDim,
                          positions: positions.baseAddress!, invFreq: invFreq.pointer, style: c.ropeStyle)
                applyRope(k.pointer, tokens: n, heads: c.kvHeadCount, headDim: c.headDim, stride: kvDim,
                          positions: positions.baseAddress!, invFreq: invFreq.pointer, style: c.ropeStyle)
                let kvLayer = cache.layers[li]
                for t in 0..<n {
                    (kvLayer.keys + slots[t] * kvDim).update(from: k.pointer + t * kvDim, count: kvDim)
                    (kvLayer.values + slots[t] * kvDim).update(from: v.pointer + t * kvDim, count: kvDim)
                }
                pagedAttention(q: q.pointer, out: attn.pointer, kv: kvLayer, sequences: batch.sequences,
                               heads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim,
                               blockSize: cache.blockSize, pool: pool)
                quantizeInput(attn.pointer, tokens: n, cols: qDim, for: layer.wo, into: qx, pool: pool)
                layer.wo(attn.pointer, tokens: n, into: tmp.pointer, qx: qx, pool: pool)
                addInPlace(x.pointer, tmp.pointer, count: n * h)
                rmsNorm(x.pointer, layer.ffnNorm.pointer, xn.pointer, tokens: n, n: h, eps: c.rmsNormEps)
                quantizeInput(xn.pointer, tokens: n, cols: h, for: layer.gate, layer.up, into: qx, pool: pool)
                layer.gate(xn.pointer, tokens: n, into: g.pointer, qx: qx, pool: pool)
                layer.up(xn.pointer, tokens: n, into: u.pointer, qx: qx, pool: pool)
                siluMul(g.pointer, u.pointer, g.pointer, count: n * c.intermediateSize)
                quantizeInput(g.pointer, tokens: n, cols: c.intermediateSize, for: layer.down, into: qx, pool: pool)
                layer.down(g.pointer, tokens: n, into: tmp.pointer, qx: qx, pool: pool)
                addInPlace(x.pointer, tmp.pointer, count: n * h)
            }
        }
        let m = batch.logitRows.count
        if m == 0 { return [] }
        let sel = FloatBuffer(count: m * h)
        for (i, row) in batch.logitRows.enumerated() {
            (sel.pointer + i * h).update(from: x.pointer + row * h, count: h)
        }
        rmsNorm(sel.pointer, outputNorm.pointer, sel.pointer, tokens: m, n: h, eps: c.rmsNormEps)
        var logits = [Float](repeating: 0, count: m * c.vocabSize)
        logits.withUnsafeMutableBufferPointer { out in
            if let head = lmHead {
                quantizeInput(sel.pointer, tokens: m, cols: h, for: head, into: qx, pool: pool)
                head(sel.pointer, tokens: m, into: out.baseAddress!, qx: qx, pool: pool)
            } else {
                matmulF32(x: sel.pointer, tokens: m, w: embedding.pointer, rows: c.vocabSize, cols: h, y: out.baseAddress!, pool: pool)
            }
        }
        return logits
    }
}
