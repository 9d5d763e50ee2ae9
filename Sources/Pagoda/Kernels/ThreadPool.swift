#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import PagodaKernelsC

/// A persistent pool of worker threads for the kernels: one fork/join costs well under a microsecond.
///
/// Work is handed out as numbered chunks that running threads claim one at a time (the caller claims too).
/// A worker that is not scheduled in time (a busy machine) simply gets no chunk: the caller finishes the
/// job alone instead of waiting for it. Chunks must therefore compute the same thing whichever thread runs
/// them. Workers spin briefly on a generation counter after each job, then park on a condition variable
/// so an idle engine sleeps. Only one job may be in flight at a time (the engine step loop owns the pool).
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    /// Wake-up signal for workers: bumped for every job.
    private let generation = Atomic<Int>(0)
    /// Admission to the current job: (job number << 10) | (threads inside << 1) | open.
    private let gate = Atomic<Int>(0)
    /// Next unclaimed chunk of the current job.
    private let claim = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var threads: [pthread_t] = []
    private var jobNumber = 0
    /// The current job and its chunk count, valid while a thread is inside the gate.
    private nonisolated(unsafe) var job: ((Int) -> Void)?
    private nonisolated(unsafe) var jobChunks = 0

    /// Spin iterations before a worker parks (a few tens of microseconds).
    private let spinLimit = 20_000

    public init(threadCount requested: Int = ThreadPool.defaultThreadCount) {
        threadCount = max(1, requested)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        for index in 1..<threadCount {
            let box = Unmanaged.passRetained(WorkerStart(pool: self, index: index))
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                start.pool.workerLoop(index: start.index)
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(tid)
        }
    }

    deinit {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    /// Number of online CPUs.
    public static var defaultThreadCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Runs `body(chunk)` once for every chunk in `0..<chunks`, on whichever threads claim them, and returns
    /// when all are done.
    public func forEachChunk(_ chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 0 { return }
        if threadCount == 1 || chunks == 1 {
            for c in 0..<chunks { body(c) }
            return
        }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            jobChunks = chunks
            claim.store(0, ordering: .relaxed)
            jobNumber = (jobNumber + 1) & ((1 << 40) - 1)
            gate.store(jobNumber << 10 | 1, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_broadcast(&cond)
                pthread_mutex_unlock(&mutex)
            }
            while true {
                let c = claim.wrappingAdd(1, ordering: .relaxed).oldValue
                if c >= chunks { break }
                escaping(c)
            }
            // Close the gate; then wait for the threads inside (each finishing its last chunk).
            var s = gate.load(ordering: .acquiring)
            while true {
                let (done, now) = gate.compareExchange(expected: s, desired: s & ~1, ordering: .acquiringAndReleasing)
                if done { break }
                s = now
            }
            var waits = 0
            while gate.load(ordering: .acquiring) & 1022 != 0 {
                waits += 1
                if waits < 4_000 { spinPause() } else { sched_yield() }
            }
            job = nil
        }
    }

    /// Runs `body(part, threadCount)` for every part in `0..<threadCount` and waits for all of them. Parts
    /// may run on any thread (see `forEachChunk`).
    public func run(_ body: (Int, Int) -> Void) {
        let n = threadCount
        forEachChunk(n) { body($0, n) }
    }

    /// Chunks to split `count` independent items into: a few per thread, so a late thread's share is
    /// picked up by the others.
    public func chunkCount(for count: Int) -> Int {
        threadCount == 1 ? min(count, 1) : min(count, threadCount * 3)
    }

    /// Splits `0..<count` into contiguous ranges (`chunkCount(for:)` of them) and runs `body(range)` on each,
    /// in parallel.
    public func parallelFor(_ count: Int, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let chunks = chunkCount(for: count)
        if chunks == 1 {
            body(0..<count)
            return
        }
        forEachChunk(chunks) { c in
            let lo = count * c / chunks, hi = count * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }

    private func workerLoop(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                spins += 1
                if spins < spinLimit {
                    if spins < 4_000 { spinPause() } else { sched_yield() }
                } else {
                    pthread_mutex_lock(&mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen {
                        pthread_cond_wait(&cond, &mutex)
                    }
                    sleepers.subtract(1, ordering: .relaxed)
                    pthread_mutex_unlock(&mutex)
                    spins = 0
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if stopping.load(ordering: .acquiring) { return }
            // Enter the current job if its gate is still open; a job already closed is skipped.
            var s = gate.load(ordering: .acquiring)
            var entered = false
            while s & 1 == 1 {
                let (done, now) = gate.compareExchange(expected: s, desired: s + 2, ordering: .acquiringAndReleasing)
                if done { entered = true; break }
                s = now
            }
            if !entered { continue }
            if let body = job {
                let chunks = jobChunks
                while true {
                    let c = claim.wrappingAdd(1, ordering: .relaxed).oldValue
                    if c >= chunks { break }
                    body(c)
                }
            }
            gate.subtract(2, ordering: .releasing)
        }
    }
}

private final class WorkerStart {
    let pool: ThreadPool
    let index: Int
    init(pool: ThreadPool, index: Int) {
        self.pool = pool
        self.index = index
    }
}

@inline(__always) func spinPause() {
    pagoda_cpu_relax()
}
