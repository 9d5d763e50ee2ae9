import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Logs one line per request: method, path, status, duration.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        func ms() -> String { String(format: "%.1fms", Double((ContinuousClock.now - start).components.attoseconds) / 1e15 + Double((ContinuousClock.now - start).components.seconds) * 1000) }
        do {
            let r = try await next(request, context)
            logger.info("\(request.method) \(request.uri.path) \(r.status.code) \(ms())")
            return r
        } catch let e as HTTPResponseError {
            logger.info("\(request.method) \(request.uri.path) \(e.status.code) \(ms())")
            throw e
        } catch {
            logger.info("\(request.method) \(request.uri.path) failed: \(error) \(ms())")
            throw error
        }
    }
}

/// Turns every error into an OpenAI-style JSON body.
struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            throw e
        } catch let e as HTTPError {
            let type = e.status == .notFound ? "not_found_error" : (e.status.code < 500 ? "invalid_request_error" : "internal_error")
            throw APIError(status: e.status, message: e.body ?? e.status.reasonPhrase, type: type)
        } catch is CancellationError {
            throw APIError(status: .init(code: 499, reasonPhrase: "Client Closed Request"), message: "The request was cancelled.", type: "cancelled")
        } catch {
            throw APIError(status: .internalServerError, message: "\(error)", type: "internal_error")
        }
    }
}

/// `Authorization: Bearer KEY` on every route except /health.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/health" { return try await next(request, context) }
        guard let auth = request.headers[.authorization], auth == "Bearer \(key)" else { throw APIError.unauthorized }
        return try await next(request, context)
    }
}

/// Runs the HTTP server until SIGINT/SIGTERM; in-flight requests get `options.gracePeriod` seconds, then are aborted.
public func runServer(engine: any InferenceEngine, options: ServerOptions, metrics: ServerMetrics, logger: Logger,
                      onReady: @escaping @Sendable (String) -> Void) async throws {
    let service = OpenAIService(engine: engine, options: options, metrics: metrics, logger: logger)
    let app = Application(
        router: service.buildRouter(),
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "pagoda"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? options.port
            let host = options.host.contains(":") ? "[\(options.host)]" : options.host
            onReady("http://\(host):\(port)")
        },
        logger: logger)
    var config = ServiceGroupConfiguration(services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint],
                                           cancellationSignals: [], logger: logger)
    config.maximumGracefulShutdownDuration = .milliseconds(Int64(options.gracePeriod * 1000))
    config.maximumCancellationDuration = .seconds(5)
    let group = ServiceGroup(configuration: config)
    do {
        try await group.run()
    } catch let e as ServiceGroupError {
        // A shutdown that had to cancel requests still ends the process normally.
        logger.warning("shutdown: \(e)")
    }
    engine.shutdown()
}
