import Foundation
import XCTest

/// A server started with --api-key and a small waiting queue: authentication, 429 on a full queue,
/// and the OpenAI Python client's conformance script.
final class APIKeyAndConformanceTests: XCTestCase {
    static let key = "test-key-\(UInt32.random(in: 0...UInt32.max))"
    nonisolated(unsafe) static var server: ServerProcess?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { server = try ServerProcess(extraArgs: ["--api-key", key, "--max-num-seqs", "2", "--max-waiting", "2"]) } catch { startError = error }
    }

    override class func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0) }
        server = nil
        super.tearDown()
    }

    var base: String {
        get throws {
            if let e = Self.startError { throw e }
            return Self.server!.baseURL
        }
    }

    func testAPIKey() async throws {
        let base = try self.base
        let health = try await HTTP.send(base + "/health")
        XCTAssertEqual(health.status, 200, "/health needs no key")
        for path in ["/v1/models", "/metrics", "/version"] {
            let none = try await HTTP.send(base + path)
            XCTAssertEqual(none.status, 401, path)
            let wrong = try await HTTP.send(base + path, apiKey: "wrong")
            XCTAssertEqual(wrong.status, 401, path)
            let err = wrong.json["error"] as? [String: Any]
            XCTAssertEqual(err?["type"] as? String, "authentication_error")
            let right = try await HTTP.send(base + path, apiKey: Self.key)
            XCTAssertEqual(right.status, 200, path)
        }
        let post = try await HTTP.post(base + "/v1/completions", ["prompt": "hi", "max_tokens": 2], apiKey: "nope")
        XCTAssertEqual(post.status, 401)
    }

    func testFullQueueGets429WithRetryAfter() async throws {
        let base = try self.base
        let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for _ in 0..<10 {
                group.addTask {
                    let r = try await HTTP.post(base + "/v1/completions", ["prompt": "hi", "max_tokens": 6, "ignore_eos": true], apiKey: Self.key)
                    if r.status == 429 { XCTAssertEqual((r.json["error"] as? [String: Any])?["type"] as? String, "rate_limit_error") }
                    return (r.status, r.header("retry-after"))
                }
            }
            var out: [(Int, String?)] = []
            for try await s in group { out.append(s) }
            return out
        }
        XCTAssertTrue(statuses.allSatisfy { $0.0 == 200 || $0.0 == 429 }, "\(statuses)")
        XCTAssertGreaterThan(statuses.filter { $0.0 == 429 }.count, 0, "no request was refused")
        XCTAssertGreaterThan(statuses.filter { $0.0 == 200 }.count, 0)
        for s in statuses where s.0 == 429 { XCTAssertNotNil(s.1, "429 without Retry-After") }
    }

    func testOpenAIPythonClientConformance() throws {
        let base = try self.base
        let root = ServerProcess.repoRoot
        let python = root.appendingPathComponent(".venv-test/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw XCTSkip(".venv-test is missing: run scripts/setup-test-env")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [root.appendingPathComponent("Tests/Scripts/openai_conformance.py").path, base, Self.key]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        print(text)
        XCTAssertEqual(p.terminationStatus, 0, "openai_conformance.py failed:\n\(text)")
    }
}
