import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import XCTest

/// A `pagoda serve` process on a free loopback port, for end-to-end tests.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let logURL: URL
    private(set) var baseURL = ""

    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static var modelPath: String { repoRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path }

    /// The `pagoda` binary built beside this test bundle, else the newest one in a build folder of the repository.
    static func binary() throws -> String {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["PAGODA_BIN"], fm.isExecutableFile(atPath: env) { return env }
        var candidates: [String] = []
        for arg in [CommandLine.arguments.first ?? "", Bundle.main.bundlePath, Bundle.main.executablePath ?? ""] where !arg.isEmpty {
            var dir = URL(fileURLWithPath: arg)
            for _ in 0..<4 {
                dir = dir.deletingLastPathComponent()
                candidates.append(dir.appendingPathComponent("pagoda").path)
            }
        }
        for c in candidates where fm.isExecutableFile(atPath: c) && !c.hasSuffix(".xctest/pagoda") { return c }
        var best: (String, Date)?
        let root = repoRoot.path
        for entry in (try? fm.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix(".build") {
            for sub in ["release", "debug"] {
                let p = "\(root)/\(entry)/\(sub)/pagoda"
                if fm.isExecutableFile(atPath: p), let d = (try? fm.attributesOfItem(atPath: p))?[.modificationDate] as? Date,
                   best == nil || d > best!.1 {
                    best = (p, d)
                }
            }
        }
        if let best { return best.0 }
        throw XCTSkip("no pagoda binary found; run `swift build -c release --product pagoda` first")
    }

    init(extraArgs: [String] = [], environment: [String: String] = [:]) throws {
        guard FileManager.default.fileExists(atPath: Self.modelPath) else {
            throw XCTSkip("model missing: run scripts/fetch-model")
        }
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-serve-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: logURL)
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["serve", "--model", Self.modelPath, "--host", "127.0.0.1", "--port", "0",
                             "--served-model-name", "smollm2", "--max-model-len", "2048", "--shutdown-grace-period", "5"] + extraArgs
        var env = ProcessInfo.processInfo.environment
        env["PAGODA_API_KEY"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let text = log()
            if let r = text.range(of: #"Serving on (http://[0-9.]+:[0-9]+)"#, options: .regularExpression) {
                baseURL = String(text[r]).replacingOccurrences(of: "Serving on ", with: "")
                return
            }
            if !process.isRunning { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        process.terminate()
        throw NSError(domain: "ServerProcess", code: 1, userInfo: [NSLocalizedDescriptionKey: "server did not start:\n\(log())"])
    }

    func log() -> String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// SIGTERM, then wait; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: logURL)
        return process.terminationStatus
    }
}

struct HTTPResult {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]) ?? [:] }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

enum HTTP {
    static func send(_ url: String, method: HTTPMethod = .GET, body: String? = nil, apiKey: String? = nil) async throws -> HTTPResult {
        var req = HTTPClientRequest(url: url)
        req.method = method
        if let body {
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(string: body))
        }
        if let apiKey { req.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        let resp = try await HTTPClient.shared.execute(req, timeout: .seconds(300))
        let buf = try await resp.body.collect(upTo: 64 << 20)
        return HTTPResult(status: Int(resp.status.code), headers: resp.headers.map { ($0.name, $0.value) }, body: Array(buffer: buf))
    }

    static func post(_ url: String, _ body: [String: Any], apiKey: String? = nil) async throws -> HTTPResult {
        let data = try JSONSerialization.data(withJSONObject: body)
        return try await send(url, method: .POST, body: String(decoding: data, as: UTF8.self), apiKey: apiKey)
    }

    /// Streams an SSE response; returns the raw bytes of each `data:` payload (without the prefix), `[DONE]` included.
    /// `stopAfter` stops reading (and drops the connection) after that many events.
    static func stream(_ url: String, _ body: [String: Any], apiKey: String? = nil, stopAfter: Int? = nil) async throws -> [[UInt8]] {
        var req = HTTPClientRequest(url: url)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/json")
        if let apiKey { req.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        req.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let resp = try await HTTPClient.shared.execute(req, timeout: .seconds(300))
        guard resp.status == .ok else {
            let b = try await resp.body.collect(upTo: 1 << 20)
            throw NSError(domain: "HTTP", code: Int(resp.status.code), userInfo: [NSLocalizedDescriptionKey: String(buffer: b)])
        }
        var pending: [UInt8] = []
        var events: [[UInt8]] = []
        for try await buf in resp.body {
            pending += Array(buffer: buf)
            while let i = findDoubleNewline(pending) {
                let event = Array(pending[..<i])
                pending.removeFirst(i + 2)
                let prefix = Array("data: ".utf8)
                if event.starts(with: prefix) { events.append(Array(event.dropFirst(prefix.count))) }
                if let stopAfter, events.count >= stopAfter { return events }
            }
        }
        return events
    }

    static func findDoubleNewline(_ b: [UInt8]) -> Int? {
        guard b.count >= 2 else { return nil }
        for i in 0..<(b.count - 1) where b[i] == 10 && b[i + 1] == 10 { return i }
        return nil
    }

    static func jsonEvents(_ events: [[UInt8]]) -> [[String: Any]] {
        events.compactMap { e in
            if e == Array("[DONE]".utf8) { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(e))) as? [String: Any]
        }
    }
}

/// Prometheus text exposition: `name{labels} value` samples, keyed by name plus labels.
func parsePrometheus(_ text: String) throws -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") {
        if line.hasPrefix("#") || line.isEmpty { continue }
        guard let space = line.lastIndex(of: " ") else { throw NSError(domain: "prom", code: 1, userInfo: [NSLocalizedDescriptionKey: "bad line \(line)"]) }
        let key = String(line[..<space]), value = String(line[line.index(after: space)...])
        guard key.range(of: #"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})?$"#, options: .regularExpression) != nil,
              let v = Double(value) ?? (value == "+Inf" ? .infinity : nil) else {
            throw NSError(domain: "prom", code: 1, userInfo: [NSLocalizedDescriptionKey: "bad line \(line)"])
        }
        out[key] = v
    }
    return out
}
