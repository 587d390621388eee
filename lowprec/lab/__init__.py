"""The lab's studies: each module runs one study, writes CSV + PNG under reports/, and resumes."""
