"""`agiformer serve`: a local web playground for trained byte models (`pip install agiformer[serve]`)."""
