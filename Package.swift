// swift-tools-version:6.0
import PackageDescription

// Kernels are compiled for the host CPU (AVX-512 or AVX2 on the project's machines; the C kernels pick their path at
// run time, and each path compiles on any x86-64 host); see ../shared/KERNEL-FACTS.md.
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=native"])]

let package = Package(
    name: "Pagoda",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Pagoda", targets: ["Pagoda"]),
        .executable(name: "pagoda", targets: ["pagoda"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "PagodaKernelsC", cSettings: [.unsafeFlags(["-O3", "-march=native"])]),
        .target(name: "Pagoda", dependencies: ["PagodaKernelsC"], swiftSettings: cpuFlags),
        .target(
            name: "PagodaServer",
            dependencies: [
                "Pagoda",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "pagoda",
            dependencies: [
                "Pagoda", "PagodaServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: cpuFlags),
        .testTarget(name: "PagodaTests", dependencies: ["Pagoda"], swiftSettings: cpuFlags),
        .testTarget(
            name: "PagodaServerTests",
            dependencies: [
                "PagodaServer",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
