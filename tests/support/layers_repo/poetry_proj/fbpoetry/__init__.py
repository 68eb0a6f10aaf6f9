MARK = "fbpoetry"
