using NUnit.Framework;
using LongCtx.Cli.Commands;

namespace LongCtx.Tests.Rope;

/// <summary>lcc compile --context/--rope/--trained-context/--force-rope parsing into a pipeline step.</summary>
[TestFixture]
public sealed class RopeOptionsTests
{
    [Test]
    public void ParsesMethodOptionsIntoOneStep()
    {
        var s = RopeOptions.Parse("yarn:beta-fast=16,attention-factor=1.2", 4096, 256, true).Single();
        Assert.That(s.Pass, Is.EqualTo("rope-yarn"));
        Assert.That(s.Options, Is.EquivalentTo(new Dictionary<string, string>
        {
            ["beta-fast"] = "16", ["attention-factor"] = "1.2", ["context"] = "4096", ["trained-context"] = "256", ["force"] = "true",
        }));
        Assert.That(RopeOptions.Parse(null, 4096, null, false), Is.Empty);
    }

    [TestCase("foo", 4096, "unknown method")]
    [TestCase("ntk", null, "needs --context")]
    [TestCase("ntk:beta", 4096, "is not k=v")]
    public void RejectsBadInput(string rope, int? context, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => RopeOptions.Parse(rope, context, null, false));
        Assert.That(ex!.Message, Does.Contain(message));
    }
}
