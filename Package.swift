// swift-tools-version:6.0
import PackageDescription

// Kernels are compiled for the host CPU (AVX-512 on the project's machines); see ../shared/KERNEL-FACTS.md.
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
    ],
    targets: [
        .target(name: "PagodaKernelsC", cSettings: [.unsafeFlags(["-O3", "-march=native"])]),
        .target(name: "Pagoda", dependencies: ["PagodaKernelsC"], swiftSettings: cpuFlags),
        .executableTarget(
            name: "pagoda",
            dependencies: ["Pagoda", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: cpuFlags),
        .testTarget(name: "PagodaTests", dependencies: ["Pagoda"], swiftSettings: cpuFlags),
    ],
    swiftLanguageModes: [.v6]
)
