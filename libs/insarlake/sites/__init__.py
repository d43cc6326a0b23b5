"""Sites: the hotspots that several viewing geometries (tracks) see over the same ground, joined,
with the vertical and east-west velocity where ascending and descending passes both see it."""
