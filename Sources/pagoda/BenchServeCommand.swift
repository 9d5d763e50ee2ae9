import ArgumentParser
import Foundation
import PagodaServer

struct BenchServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Load a running server with streamed completions and report throughput and latency (like `vllm bench serve`).")

    @Option(help: "Base URL of the server.") var url = "http://127.0.0.1:8000"
    @Option(help: "Model name (default: the server's first model).") var model: String?
    @Option(help: "API key (default: $PAGODA_API_KEY).") var apiKey: String?
    @Option(help: "Number of requests.") var numPrompts = 64
    @Option(help: "Most requests in flight (default 16 unless --request-rate is given).") var maxConcurrency: Int?
    @Option(help: "Requests per second, Poisson arrivals (default: all at once).") var requestRate: Double?
    @Option(help: "Prompt length in tokens.") var randomInputLen = 128
    @Option(help: "Output length in tokens (ignore_eos).") var randomOutputLen = 64
    @Option(help: "Tokens every prompt shares at its start.") var sharedPrefixLen = 0
    @Option(help: "Random seed for the prompts.") var seed: UInt64 = 0
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        var o = BenchServeOptions()
        o.url = url
        o.model = model
        o.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PAGODA_API_KEY"]
        o.numPrompts = numPrompts
        o.maxConcurrency = maxConcurrency ?? (requestRate == nil ? 16 : nil)
        o.requestRate = requestRate
        o.randomInputLen = randomInputLen
        o.randomOutputLen = randomOutputLen
        o.sharedPrefixLen = sharedPrefixLen
        o.seed = seed
        let quiet = json
        let s = try await BenchServe.run(o) { line in
            if !quiet { print(line) } else { FileHandle.standardError.write((line + "\n").data(using: .utf8)!) }
        }
        print(json ? s.json.jsonText() : s.table)
        if s.completed == 0 { throw ExitCode.failure }
    }
}
