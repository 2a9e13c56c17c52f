using NUnit.Framework;

namespace LongCtx.Tests.Attention;

internal static class Fixtures
{
    /// <summary>Path of a fixture under the shared models, or Assert.Ignore when it is absent (<see cref="TestSupport.Fixture"/>).</summary>
    public static string Require(string relative) => TestSupport.Fixture(relative);
}
