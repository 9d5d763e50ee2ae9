/// The element type of the KV cache (vLLM's `--kv-cache-dtype`, llama.cpp's `-ctk/-ctv`).
public enum KVCacheDType: String, Sendable, CaseIterable {
    /// fp32: exact; the reference path.
    case f32
    /// fp16: half the memory and bandwidth, as llama.cpp stores its cache by default.
    case f16

    public var bytes: Int { self == .f32 ? 4 : 2 }

    /// The default: fp32. fp16 rounding alone moves this model's logprobs by under 4e-4 (fp32 weights), but
    /// with int8 activations any perturbation re-rolls their rounding noise (up to ~0.4 logprob on flat
    /// distributions): measured on the greedy references, 20/20 close with an fp32 cache, 19/20 with fp16.
    /// fp16 is the opt-in for memory and long-context speed.
    public static let automatic: KVCacheDType = .f32
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
    private let regions: [HugePageRegion]
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
        // Huge-page backed: attention reads a sequence's blocks scattered over the pool, one short run each.
        let regions = (0..<2 * config.layerCount).map { _ in HugePageRegion(byteCount: max(perLayer, 64)) }
        self.regions = regions
        layers = (0..<config.layerCount).map { LayerKV(keys: regions[2 * $0].base, values: regions[2 * $0 + 1].base, dtype: dtype) }
    }

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
