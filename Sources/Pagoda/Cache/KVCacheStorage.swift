/// The element type of the KV cache (vLLM's `--kv-cache-dtype`, llama.cpp's `-ctk/-ctv`).
public enum KVCacheDType: String, Sendable, CaseIterable {
    /// fp32: exact; the reference path (`--kv-cache-dtype f32`).
    case f32
    /// fp16: half the memory and bandwidth, as llama.cpp stores its cache by default; `auto` for quantized weights.
    case f16

    public var bytes: Int { self == .f32 ? 4 : 2 }

    /// What `auto` stands for with a model: the cache is never the largest error. Quantized weights multiply
    /// int8 activations, whose rounding outweighs fp16's: fp16, as llama.cpp stores its cache. F32, F16 and BF16
    /// weights multiply fp32 activations (and the fp32 reference path): fp32, exact. fp16 rounding alone moves
    /// the default model's logprobs by under 4e-4; with int8 activations any perturbation re-rolls their
    /// rounding, which the exact outliers keep small: first-step logprob error against Transformers over the 20
    /// greedy references max 0.238, mean 0.095 with fp16 (0.183 and 0.095 with fp32), 20/20 close either way.
    public static func automatic(for model: LlamaModel) -> KVCacheDType { model.hasQuantizedMatrices ? .f16 : .f32 }
}

/// The memory behind the paged KV cache: for every layer, `blockCount` blocks of `blockSize` token slots,
/// each slot holding the keys and values of all KV heads (fp32 or fp16; keys transposed within a block, see
/// `LayerKV`). Allocated once, untouched until used (pages are mapped on first write); blocks are handed out
/// by the block pool, never per request.
public final class KVCacheStorage: @unchecked Sendable {
    public let layerCount: Int
    public let blockCount: Int
    public let blockSize: Int
    public let kvHeads: Int
    public let headDim: Int
    public let dtype: KVCacheDType
    private let buffers: [UnsafeMutableRawPointer]
    public let layers: [LayerKV]

    public init(config: ModelConfig, blockCount: Int, blockSize: Int, dtype: KVCacheDType = .f32) {
        precondition(blockCount > 0 && blockSize > 0)
        layerCount = config.layerCount
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.dtype = dtype
        kvHeads = config.kvHeadCount
        headDim = config.headDim
        let perLayer = blockCount * blockSize * config.kvHeadCount * config.headDim * dtype.bytes
        // Plain 4 KiB pages: huge pages would make every first write to a new 2 MiB of cache fault, zero and
        // possibly compact memory in the middle of a step (measured: cache writes 4× slower in a 64-sequence
        // batch), for no measured gain in attention. Page aligned, so that one head's keys or values of a
        // block (4 KiB for 16 fp32 slots of 64 dimensions) are one page, not parts of two.
        let buffers = (0..<2 * config.layerCount).map { _ in
            UnsafeMutableRawPointer.allocate(byteCount: max(perLayer, 64), alignment: 4096)
        }
        self.buffers = buffers
        layers = (0..<config.layerCount).map { LayerKV(keys: buffers[2 * $0], values: buffers[2 * $0 + 1], dtype: dtype) }
    }

    deinit { for b in buffers { b.deallocate() } }

    /// Bytes of one block across all layers (keys and values).
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int, dtype: KVCacheDType) -> Int {
        2 * config.layerCount * blockSize * config.kvHeadCount * config.headDim * dtype.bytes
    }

    public var bytesPerBlock: Int { 2 * layerCount * blockSize * kvHeads * headDim * dtype.bytes }
    public var totalBytes: Int { bytesPerBlock * blockCount }
}

extension KVCacheStorage {
    /// Copies block `src` into block `dst` in every layer (copy-on-write).
    public func copyBlock(from src: Int, to dst: Int) {
        let n = blockSize * kvHeads * headDim * dtype.bytes
        for layer in layers {
            (layer.keys + dst * n).copyMemory(from: layer.keys + src * n, byteCount: n)
            (layer.values + dst * n).copyMemory(from: layer.values + src * n, byteCount: n)
        }
    }
}
