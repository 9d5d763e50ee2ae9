/// Hands out KV blocks to sequences: per-sequence block tables over one `BlockPool`, prefix-cache lookups
/// by chained block hashes, copy-on-write for shared blocks, and freeing. Only the scheduler calls it.
public struct KVCacheManager: Sendable {
    public private(set) var pool: BlockPool
    public let blockSize: Int
    public let enablePrefixCaching: Bool
    public private(set) var tables: [SequenceKey: [Int]] = [:]
    /// How many leading blocks of each sequence are already registered in the prefix cache.
    private var registered: [SequenceKey: Int] = [:]
    /// Prefix-cache statistics, in tokens.
    public private(set) var queriedTokens = 0
    public private(set) var hitTokens = 0

    public init(blockCount: Int, blockSize: Int, enablePrefixCaching: Bool) {
        pool = BlockPool(blockCount: blockCount)
        self.blockSize = blockSize
        self.enablePrefixCaching = enablePrefixCaching
    }

    public func blocks(of key: SequenceKey) -> [Int] { tables[key] ?? [] }
    public var usage: Double { Double(pool.usedCount) / Double(pool.blockCount) }

    /// Extends `request.blockHashes` to cover every full block of its known tokens.
    func updateHashes(_ request: Request) {
        let full = request.numTokens / blockSize
        while request.blockHashes.count < full {
            let i = request.blockHashes.count
            let tokens = request.allTokenIds[i * blockSize..<(i + 1) * blockSize].map(Int32.init)
            // How many of the block's tokens the wide product computes: with the parent chain, that fixes how
            // every token up to the block's end was computed, so only blocks computed the same way are shared.
            let wide = min(max(request.wideTokenCount - i * blockSize, 0), blockSize)
            request.blockHashes.append(BlockHash(parent: request.blockHashes.last, tokens: tokens, extraKey: wide))
        }
    }

    /// The longest run of cached full blocks at the start of the request, leaving at least one token to
    /// compute (its logits are needed). Does not take references.
    mutating func cachedPrefix(_ request: Request) -> [Int] {
        guard enablePrefixCaching else { return [] }
        updateHashes(request)
        let maxBlocks = (request.numTokens - 1) / blockSize
        var found: [Int] = []
        for h in request.blockHashes.prefix(maxBlocks) {
            guard let b = pool.lookup(h) else { break }
            found.append(b)
        }
        queriedTokens += request.numTokens
        hitTokens += found.count * blockSize
        return found
    }

    /// Gives the sequence blocks for `newTokens` more tokens after `request.numComputedTokens`, starting from
    /// `cachedBlocks` when it has none yet. Returns the block copies needed before the step (copy-on-write),
    /// or nil when the pool has too few free blocks (nothing is changed then).
    mutating func allocateSlots(_ request: Request, newTokens: Int, cachedBlocks: [Int] = []) -> [(src: Int, dst: Int)]? {
        let key = request.key
        var table = tables[key] ?? []
        let needed = (request.numComputedTokens + newTokens + blockSize - 1) / blockSize
        // Cached blocks that sit in the free queue are taken out of it, so they count against the free blocks.
        let reclaimed = cachedBlocks.filter { pool.refCounts[$0] == 0 }.count
        let fresh = max(0, needed - table.count - cachedBlocks.count)
        // A partly written block shared with another sequence must be copied before this one writes to it.
        let writeBlock = request.numComputedTokens / blockSize
        let copy = table.indices.contains(writeBlock) && pool.refCounts[table[writeBlock]] > 1
        guard fresh + reclaimed + (copy ? 1 : 0) <= pool.freeCount else { return nil }
        for b in cachedBlocks { pool.retain(b) }
        table += cachedBlocks
        var copies: [(src: Int, dst: Int)] = []
        if copy, let dst = pool.allocate(1)?.first {
            copies.append((table[writeBlock], dst))
            pool.release(table[writeBlock])
            table[writeBlock] = dst
        }
        if fresh > 0, let more = pool.allocate(fresh) { table += more }
        tables[key] = table
        if registered[key] == nil { registered[key] = cachedBlocks.count }
        return copies
    }

    /// Registers the sequence's newly filled full blocks in the prefix cache.
    mutating func cacheFullBlocks(_ request: Request) {
        guard enablePrefixCaching, let table = tables[request.key] else { return }
        updateHashes(request)
        let full = min(request.numComputedTokens / blockSize, table.count, request.blockHashes.count)
        var i = registered[request.key] ?? 0
        while i < full {
            pool.markCached(table[i], hash: request.blockHashes[i])
            i += 1
        }
        registered[request.key] = max(i, registered[request.key] ?? 0)
    }

    /// A new sequence sharing all of `parent`'s blocks (n > 1 sampling).
    mutating func fork(_ parent: Request, into child: Request) {
        let table = tables[parent.key] ?? []
        for b in table { pool.retain(b) }
        tables[child.key] = table
        registered[child.key] = registered[parent.key] ?? 0
    }

    /// Drops the sequence's blocks: the last blocks join the free queue first, so they are evicted first.
    mutating func free(_ key: SequenceKey) {
        guard let table = tables.removeValue(forKey: key) else { return }
        registered[key] = nil
        for b in table.reversed() { pool.release(b) }
    }

    public mutating func resetPrefixCache() { pool.resetPrefixCache() }
}
