from ffstream.cli import main

raise SystemExit(main())
