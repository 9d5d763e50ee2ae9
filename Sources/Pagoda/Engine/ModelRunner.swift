/// Executes a scheduled step: makes the block copies, flattens the scheduled sequences into one batch
/// (token ids, positions, block tables), runs the model, and hands back each sequence's logits rows.
public final class ModelRunner {
    public let model: LlamaModel
    public let cache: KVCacheStorage
    public let pool: ThreadPool
    /// Tokens run through the model since start (prefix-cache hits are not computed, so not counted).
    public private(set) var computedTokens = 0

    public init(model: LlamaModel, cache: KVCacheStorage, pool: ThreadPool) {
        self.model = model
        self.cache = cache
        self.pool = pool
    }

    /// Logits for one sequence of the step: the row to sample from (if the step reaches its last known
    /// token) and rows for prompt log-probabilities (position → row).
    public struct SequenceLogits {
        public var sampleRow: Int?
        public var promptRows: [(position: Int, row: Int)] = []
    }

    public func execute(_ output: SchedulerOutput, kv: KVCacheManager) -> (logits: [Float], rows: [SequenceLogits]) {
        for c in output.copies { cache.copyBlock(from: c.src, to: c.dst) }
        // Each sequence's new tokens in up to two pieces: those the wide product computes (prompt tokens, see
        // `LlamaModel.wideTokenCount`) and the rest. All wide pieces go first in the batch, so that they are its
        // leading `wideRows` rows, and a sequence's earlier positions come before its later ones.
        struct Piece { var sequence: Int; var start: Int; var count: Int }
        var widePieces: [Piece] = [], narrowPieces: [Piece] = []
        for (i, s) in output.scheduled.enumerated() {
            let start = s.request.numComputedTokens, end = start + s.numNewTokens
            let wideEnd = min(max(s.request.wideTokenCount, start), end)
            if wideEnd > start { widePieces.append(Piece(sequence: i, start: start, count: wideEnd - start)) }
            if end > wideEnd { narrowPieces.append(Piece(sequence: i, start: wideEnd, count: end - wideEnd)) }
        }
        var tokens: [Int32] = [], positions: [Int32] = []
        var sequences: [AttentionSequence] = []
        var logitRows: [Int] = []
        var perSeq = [SequenceLogits](repeating: SequenceLogits(), count: output.scheduled.count)
        for piece in widePieces + narrowPieces {
            let r = output.scheduled[piece.sequence].request
            let base = tokens.count
            for p in piece.start..<piece.start + piece.count {
                tokens.append(Int32(r.allTokenIds[p]))
                positions.append(Int32(p))
            }
            sequences.append(AttentionSequence(tokenStart: base, tokenCount: piece.count, startPosition: piece.start,
                                               blockTable: kv.blocks(of: r.key).map(Int32.init)))
            let promptEnd = min(piece.start + piece.count, r.promptTokenIds.count - 1)
            if r.params.promptLogprobs != nil && piece.start < promptEnd {
                for p in piece.start..<promptEnd where p + 1 >= r.promptLogprobs.count {
                    perSeq[piece.sequence].promptRows.append((p, logitRows.count))
                    logitRows.append(base + p - piece.start)
                }
            }
            if piece.start + piece.count == r.numTokens {
                perSeq[piece.sequence].sampleRow = logitRows.count
                logitRows.append(base + piece.count - 1)
            }
        }
        computedTokens += tokens.count
        let wideRows = widePieces.reduce(0) { $0 + $1.count }
        let batch = ForwardBatch(tokens: tokens, positions: positions, sequences: sequences, logitRows: logitRows,
                                 wideRows: wideRows)
        return (model.forward(batch, cache: cache, pool: pool), perSeq)
    }
}
