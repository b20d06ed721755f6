from ffstream.entry import main

raise SystemExit(main())
