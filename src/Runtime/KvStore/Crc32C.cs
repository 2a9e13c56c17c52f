using System.Buffers.Binary;
using System.Numerics;

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF), the checksum of every KV-store
/// section. System.IO.Hashing is a NuGet package, not part of the .NET 10 shared framework, while
/// <see cref="BitOperations.Crc32C(uint, ulong)"/> is (the SSE4.2 / ARMv8 CRC instruction, with a software fallback), so
/// no package is needed. Check value: Compute("123456789") = 0xE3069283 (RFC 3720 B.4).
/// </summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}
